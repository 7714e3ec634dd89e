/**
 * Renders a layer graph two ways: the seed-shaped JSON for machines (container_id, layers[].layer_id,
 * dependencies, services, plus added fields) and a tree for people.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { LayerKind, MountCheckStatus, type Layer, type LayerGraph } from "../proto/gen/shadowlayer/v1/graph_pb.js";
import { padCells } from "./table.js";
import { safeLine, terminalSafe } from "./terminal-safe.js";

const KIND: Record<LayerKind, string> = {
  [LayerKind.UNSPECIFIED]: "unknown",
  [LayerKind.IMAGE]: "image",
  [LayerKind.WRITABLE]: "writable",
  [LayerKind.VOLUME]: "volume",
};

const CHECK: Record<MountCheckStatus, string> = {
  [MountCheckStatus.UNSPECIFIED]: "unknown",
  [MountCheckStatus.OK]: "ok",
  [MountCheckStatus.MISMATCH]: "mismatch",
  [MountCheckStatus.UNAVAILABLE]: "unavailable",
};

function iso(t: Timestamp | undefined): string | null {
  return t === undefined ? null : timestampDate(t).toISOString();
}

export interface LdgJson {
  container_id: string;
  container_name: string;
  image: string;
  image_id: string;
  node: string;
  state: string;
  pid: number;
  storage_driver: string;
  /** docker or containerd. */
  runtime: string;
  /** Kubernetes identity (CRI), "" outside a pod. */
  pod: string;
  namespace: string;
  pod_uid: string;
  pod_labels: Record<string, string>;
  pod_annotations: Record<string, string>;
  observed_at: string | null;
  labels: Record<string, string>;
  layers: Array<Record<string, unknown> & { layer_id: string; dependencies: string[]; services: string[] }>;
  mount_check: { status: string; detail: string; engine_chain: string[]; mount_chain: string[] };
}

function layerJson(l: Layer): LdgJson["layers"][number] {
  const base = {
    layer_id: l.layerId,
    dependencies: [...l.dependencies],
    services: [...l.services],
    name: l.name,
    kind: KIND[l.kind],
    drift: l.drift,
    processes: l.processes.map((p) => ({
      pid: p.pid,
      name: p.name,
      exe: p.exe,
      argv: [...p.argv],
      start_time_ticks: Number(p.startTimeTicks),
      drift: p.drift,
      ...(p.drift ? { drift_reason: p.driftReason } : {}),
    })),
  };
  if (l.kind === LayerKind.IMAGE) {
    return { ...base, index: l.index, size_bytes: Number(l.sizeBytes), created_by: l.createdBy, created_at: iso(l.createdAt), chain_id: l.chainId, cache_id: l.cacheId };
  }
  if (l.kind === LayerKind.VOLUME) return { ...base, mount_point: l.mountPoint, source: l.source };
  return { ...base, cache_id: l.cacheId };
}

export function toLdgJson(g: LayerGraph): LdgJson {
  return {
    container_id: g.containerId,
    container_name: g.containerName,
    image: g.image,
    image_id: g.imageId,
    node: g.node,
    state: g.state,
    pid: g.pid,
    storage_driver: g.storageDriver,
    runtime: g.runtime,
    pod: g.pod,
    namespace: g.namespace,
    pod_uid: g.podUid,
    pod_labels: { ...g.podLabels },
    pod_annotations: { ...g.podAnnotations },
    observed_at: iso(g.observedAt),
    labels: { ...g.labels },
    layers: g.layers.map(layerJson),
    mount_check: {
      status: CHECK[g.mountCheck?.status ?? MountCheckStatus.UNSPECIFIED],
      detail: g.mountCheck?.detail ?? "",
      engine_chain: [...(g.mountCheck?.engineChain ?? [])],
      mount_chain: [...(g.mountCheck?.mountChain ?? [])],
    },
  };
}

export function humanBytes(n: bigint | number): string {
  let v = Number(n);
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function shortLayerId(id: string): string {
  if (id.startsWith("sha256:")) return id.slice(0, 19);
  if (id.startsWith("rw:")) return id.slice(0, 15);
  return id.length > 40 ? `${id.slice(0, 37)}...` : id;
}

/**
 * A tree for people: one line per layer, top of the stack last, processes under their layer. Every
 * string from the graph is made terminal-safe before it is placed or padded.
 */
export function renderTree(g: LayerGraph): string {
  const lines: string[] = [];
  const status = CHECK[g.mountCheck?.status ?? MountCheckStatus.UNSPECIFIED];
  lines.push(safeLine`${g.containerName || g.containerId.slice(0, 12)}  ${g.containerId.slice(0, 12)}  ${g.image}  ${g.state}  node=${g.node}`);
  if (g.pod !== "") lines.push(safeLine`  pod ${g.namespace}/${g.pod} (uid ${g.podUid || "?"}) on ${g.runtime}`);
  lines.push(`  mount check: ${status}${g.mountCheck?.detail ? safeLine` (${g.mountCheck.detail})` : ""}`);
  g.layers.forEach((l, i) => {
    const last = i === g.layers.length - 1;
    const tag = l.kind === LayerKind.IMAGE ? `[${l.index}]` : l.kind === LayerKind.WRITABLE ? "rw " : "vol";
    const size = l.kind === LayerKind.IMAGE ? humanBytes(l.sizeBytes) : "";
    const id = terminalSafe(shortLayerId(l.layerId));
    lines.push(`  ${last ? "└─" : "├─"} ${padCells(tag, 4)}${padCells(id, 21)} ${padCells(size, 9)} ${terminalSafe(l.name)}${l.drift ? "  DRIFT" : ""}`);
    for (const p of l.processes) {
      lines.push(safeLine`  ${last ? "  " : "│ "}      pid ${p.pid} ${p.name} (${p.exe})${p.drift ? ` drift: ${p.driftReason}` : ""}`);
    }
  });
  return lines.join("\n");
}
