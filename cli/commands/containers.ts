import type { Command } from "commander";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { QueryService, type ContainerSummary } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { action, out } from "../action.js";
import { query } from "../client.js";
import { clientOptions, type JsonFlags } from "../options.js";
import { renderTable } from "../telemetry-format.js";

function containerJson(c: ContainerSummary): Record<string, unknown> {
  return {
    container_id: c.containerId,
    container_name: c.containerName,
    image: c.image,
    node: c.node,
    state: c.state,
    layer_count: c.layerCount,
    process_count: c.processCount,
    drift: c.drift,
    observed_at: c.observedAt ? timestampDate(c.observedAt).toISOString() : null,
  };
}

function renderContainers(rows: readonly ContainerSummary[]): string {
  const head = ["CONTAINER", "NAME", "IMAGE", "NODE", "STATE", "LAYERS", "PROCS", "DRIFT"];
  return renderTable(
    head,
    rows.map((r) => [r.containerId.slice(0, 12), r.containerName, r.image, r.node, r.state, String(r.layerCount), String(r.processCount), r.drift ? "yes" : "-"]),
  );
}

export function registerContainers(program: Command): void {
  clientOptions(program.command("containers").alias("ps").description("list the containers the aggregator knows"))
    .option("--node <name>", "only this node")
    .option("--json", "JSON array")
    .action(action(containers));
}

async function containers(o: JsonFlags & { node?: string }): Promise<void> {
  const res = await query(o, QueryService.method.listContainers, { node: o.node ?? "" });
  out(o.json ? JSON.stringify(res.containers.map(containerJson), null, 2) : renderContainers(res.containers));
}
