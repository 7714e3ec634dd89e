/**
 * How the list of containers looks: a table for people, snake_case JSON for machines.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ContainerSummary } from "../proto/gen/shadowlayer/v1/query_pb.js";
import { renderTable } from "./table.js";

export function containerJson(c: ContainerSummary): Record<string, unknown> {
  return {
    container_id: c.containerId,
    container_name: c.containerName,
    image: c.image,
    node: c.node,
    state: c.state,
    pod: c.pod,
    namespace: c.namespace,
    runtime: c.runtime,
    layer_count: c.layerCount,
    process_count: c.processCount,
    drift: c.drift,
    observed_at: c.observedAt ? timestampDate(c.observedAt).toISOString() : null,
  };
}

export function renderContainers(rows: readonly ContainerSummary[]): string {
  // Pods only where there are any (a Docker host has none): NAMESPACE/POD after the name.
  const pods = rows.some((r) => r.pod !== "");
  const head = ["CONTAINER", "NAME", ...(pods ? ["POD"] : []), "IMAGE", "NODE", "STATE", "LAYERS", "PROCS", "DRIFT"];
  return renderTable(
    head,
    rows.map((r) => [
      r.containerId.slice(0, 12),
      r.containerName,
      ...(pods ? [r.pod === "" ? "-" : `${r.namespace}/${r.pod}`] : []),
      r.image,
      r.node,
      r.state,
      String(r.layerCount),
      String(r.processCount),
      r.drift ? "yes" : "-",
    ]),
  );
}
