/**
 * Builds a container's Layer Dependency Graph from the engine's facts, the image's real layer
 * directories, the container's processes, and its root mount as the kernel sees it.
 */
import { posix } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  LayerGraphSchema,
  LayerKind,
  LayerSchema,
  MountCheckSchema,
  MountCheckStatus,
  ProcessSchema,
  type Layer,
  type LayerGraph,
  type MountCheck,
  type Process,
} from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { readProcFile } from "../runtime/proc-files.js";
import type { ProcInfo } from "../runtime/container-processes.js";
import { OverlayStack } from "../overlay/overlay-stack.js";
import { resolveInRoot } from "../overlay/resolve-in-root.js";
import type { ContainerFacts, MountFact } from "../runtime/engine-facts.js";
import type { RuntimeKind, StorageLayout } from "../runtime/runtime.js";
import { dockerLayout } from "../runtime/docker-runtime.js";
import { layerName, type ResolvedImage } from "./image-layers.js";
import { overlayRoot, parseMountinfo } from "./mountinfo.js";

export interface LdgBuilderOptions {
  node: string;
  procRoot: string;
  /** The runtime the facts come from; Docker's with `dockerRoot` when absent. */
  runtime?: RuntimeKind;
  /** How the runtime names layer directories (the mount check). */
  layout?: StorageLayout;
  dockerRoot?: string;
}

export function writableLayerId(containerId: string): string {
  return `rw:${containerId}`;
}

export function volumeLayerId(m: MountFact): string {
  if (m.type === "volume" && m.name !== "") return `volume:${m.name}`;
  if (m.type === "bind") return `volume:${m.source}`;
  return `volume:${m.type || "mount"}:${m.destination}`;
}

/** The longest mount destination that contains `path`. */
function mountFor(mounts: readonly MountFact[], path: string): MountFact | undefined {
  let best: MountFact | undefined;
  for (const m of mounts) {
    const d = m.destination.replace(/\/+$/, "");
    if (d === "") continue;
    if ((path === d || path.startsWith(`${d}/`)) && (best === undefined || d.length > best.destination.length)) best = m;
  }
  return best;
}

/** Whether every image layer's directory is known (else no path can be placed on a layer). */
function layersReadable(c: ContainerFacts, image: ResolvedImage): boolean {
  return c.storageUnavailable === undefined && image.layers.every((l) => l.dir !== "");
}

export interface Attribution {
  layerId: string;
  drift: boolean;
  reason: string;
}

export class LdgBuilder {
  /** image id + exe path -> index (bottom first) of the image layer providing it, or -1. */
  private readonly exeCache = new Map<string, number>();
  /** container id + pid -> the mount check, which cannot change while that process lives. */
  private readonly mountCache = new Map<string, MountCheck>();

  private readonly layout: StorageLayout;

  constructor(private readonly opts: LdgBuilderOptions) {
    this.layout = opts.layout ?? dockerLayout(opts.dockerRoot ?? "/var/lib/docker");
  }

  clear(): void {
    this.exeCache.clear();
    this.mountCache.clear();
  }

  /** Drops what is cached for a container that is gone. */
  forget(containerId: string): void {
    for (const k of this.mountCache.keys()) if (k.startsWith(containerId)) this.mountCache.delete(k);
  }

  build(c: ContainerFacts, image: ResolvedImage, procs: readonly ProcInfo[], now = new Date()): LayerGraph {
    const rwId = writableLayerId(c.id);
    const imageLayers = image.layers;
    const topId = imageLayers[imageLayers.length - 1]?.diffId;
    const layers: Layer[] = imageLayers.map((l, i) =>
      create(LayerSchema, {
        layerId: l.diffId,
        name: layerName(l.createdBy, l.comment, i),
        kind: LayerKind.IMAGE,
        dependencies: i > 0 ? [imageLayers[i - 1]?.diffId ?? ""] : [],
        sizeBytes: l.sizeBytes,
        createdBy: l.createdBy,
        ...(l.created !== "" && !Number.isNaN(Date.parse(l.created)) ? { createdAt: timestampFromDate(new Date(l.created)) } : {}),
        index: i,
        chainId: l.chainId,
        cacheId: l.cacheId,
      }),
    );
    const byId = new Map<string, Layer>(layers.map((l) => [l.layerId, l]));
    const rw = create(LayerSchema, {
      layerId: rwId,
      name: "container writable layer",
      kind: LayerKind.WRITABLE,
      dependencies: topId !== undefined ? [topId] : [],
      cacheId: c.upperDir === "" ? "" : this.layout.dirKey(c.upperDir),
      index: -1,
    });
    layers.push(rw);
    byId.set(rwId, rw);
    for (const m of c.mounts) {
      const id = volumeLayerId(m);
      if (byId.has(id)) continue;
      const v = create(LayerSchema, {
        layerId: id,
        name: `${m.type} ${m.destination}${m.rw ? "" : " (ro)"}`,
        kind: LayerKind.VOLUME,
        dependencies: topId !== undefined ? [topId] : [],
        mountPoint: m.destination,
        source: m.source,
        index: -1,
      });
      layers.push(v);
      byId.set(id, v);
    }

    const services = new Map<string, Set<string>>();
    // Without layer directories no process can be placed on a layer: none is, rather than a wrong one.
    for (const p of layersReadable(c, image) ? procs : []) {
      if (p.exe === "") continue;
      const a = this.attribute(c, image, p);
      const layer = byId.get(a.layerId);
      if (layer === undefined) continue;
      const proc: Process = create(ProcessSchema, {
        pid: p.pid,
        name: p.comm,
        exe: p.exe,
        argv: p.argv,
        startTimeTicks: p.startTime,
        drift: a.drift,
        driftReason: a.reason,
      });
      layer.processes.push(proc);
      if (a.drift) layer.drift = true;
      let s = services.get(a.layerId);
      if (s === undefined) services.set(a.layerId, (s = new Set()));
      s.add(p.comm);
    }
    for (const l of layers) {
      l.services = [...(services.get(l.layerId) ?? [])].sort();
      l.processes.sort((a, b) => a.pid - b.pid);
    }

    return create(LayerGraphSchema, {
      containerId: c.id,
      containerName: c.name,
      image: c.image,
      imageId: c.imageId,
      node: this.opts.node,
      state: c.state,
      labels: c.labels,
      layers,
      mountCheck: this.mountCheck(c, image),
      observedAt: timestampFromDate(now),
      storageDriver: c.driver,
      pid: c.pid,
      runtime: this.opts.runtime ?? "docker",
      ...(c.pod !== undefined
        ? { pod: c.pod.name, namespace: c.pod.namespace, podUid: c.pod.uid, podLabels: c.pod.labels, podAnnotations: c.pod.annotations }
        : {}),
    });
  }

  /** The layer providing a running process's executable (the LDG rule), and whether it is drift. */
  attribute(c: ContainerFacts, image: ResolvedImage, p: Pick<ProcInfo, "exe" | "exeDeleted">): Attribution {
    const rwId = writableLayerId(c.id);
    // Layer directories unknown (another snapshotter, a snapshot chain that is not the image's):
    // nothing can be proven to be in no layer, so nothing is drift; telemetry goes to the
    // container's own (writable) layer and the graph places no process (see build).
    if (!layersReadable(c, image)) return { layerId: rwId, drift: false, reason: "" };
    const m = mountFor(c.mounts, p.exe);
    if (m !== undefined) return { layerId: volumeLayerId(m), drift: true, reason: "volume" };
    if (p.exeDeleted) {
      // The file is gone from the merged view; a deleted image file would need a whiteout in rw.
      return { layerId: rwId, drift: true, reason: "deleted" };
    }
    const inImage = this.imageProvider(image, p.exe);
    if (c.upperDir !== "" && new OverlayStack([c.upperDir]).locate(p.exe) !== undefined) {
      return { layerId: rwId, drift: true, reason: inImage >= 0 ? "modified" : "added" };
    }
    if (inImage >= 0) {
      const l = image.layers[inImage];
      if (l !== undefined) return { layerId: l.diffId, drift: false, reason: "" };
    }
    // In no layer we know of (for example written and replaced between our reads).
    return { layerId: rwId, drift: true, reason: "added" };
  }

  /**
   * The layer providing `path` (as seen inside the container) for an exec whose process may be
   * gone already: volumes first, then the writable layer, then the image layers. Symlinks are
   * followed inside `root` (the container's /proc/<pid>/root) as the kernel followed them for the
   * container, never through the host's own files; without a root the path is taken as it is.
   */
  attributePath(c: ContainerFacts, image: ResolvedImage, path: string, root: string | undefined): Attribution & { path: string } {
    const p = (root === undefined ? undefined : resolveInRoot(root, path)?.path) ?? posix.join("/", path);
    return { ...this.attribute(c, image, { exe: p, exeDeleted: false }), path: p };
  }

  /** Layer ids providing the given files (shared libraries), deduplicated, in first-seen order. */
  libraryLayers(c: ContainerFacts, image: ResolvedImage, paths: readonly string[]): string[] {
    const out = new Set<string>();
    for (const path of paths) out.add(this.attribute(c, image, { exe: path, exeDeleted: false }).layerId);
    return [...out];
  }

  private imageProvider(image: ResolvedImage, exe: string): number {
    const key = `${image.id}\0${exe}`;
    const hit = this.exeCache.get(key);
    if (hit !== undefined) return hit;
    const idx = new OverlayStack(image.layers.map((l) => l.dir)).locate(exe)?.provider.layer ?? -1;
    this.exeCache.set(key, idx);
    return idx;
  }

  private mountCheck(c: ContainerFacts, image: ResolvedImage): MountCheck {
    const key = `${c.id}:${c.pid}`;
    const hit = this.mountCache.get(key);
    if (hit !== undefined) return hit;
    const check = this.computeMountCheck(c, image);
    if (c.pid > 0 && check.status !== MountCheckStatus.UNAVAILABLE) this.mountCache.set(key, check);
    return check;
  }

  private computeMountCheck(c: ContainerFacts, image: ResolvedImage): MountCheck {
    const layout = this.layout;
    const engineChain = c.lowerDirs.map((d) => layout.dirKey(d));
    const base = { engineChain };
    // The runtime says when its storage cannot be read or checked (a driver or snapshotter other than overlay).
    if (c.storageUnavailable !== undefined) {
      return create(MountCheckSchema, { ...base, status: MountCheckStatus.UNAVAILABLE, detail: c.storageUnavailable });
    }
    if (c.storageProblem !== undefined) {
      return create(MountCheckSchema, { ...base, status: MountCheckStatus.MISMATCH, detail: c.storageProblem });
    }
    const imageChain = image.layers.map((l) => l.cacheId).reverse();
    const engineImageChain = engineChain.filter((id) => layout.isImageEntry(id));
    if (engineImageChain.join() !== imageChain.join()) {
      return create(MountCheckSchema, {
        ...base,
        status: MountCheckStatus.MISMATCH,
        detail: `container lowerdirs [${engineImageChain.join(", ")}] differ from the image's layer chain [${imageChain.join(", ")}]`,
      });
    }
    if (c.pid <= 0) {
      return create(MountCheckSchema, { ...base, status: MountCheckStatus.UNAVAILABLE, detail: "container is not running" });
    }
    const text = readProcFile(`${this.opts.procRoot}/${c.pid}/mountinfo`);
    if (text === undefined) {
      return create(MountCheckSchema, { ...base, status: MountCheckStatus.UNAVAILABLE, detail: `cannot read ${this.opts.procRoot}/${c.pid}/mountinfo` });
    }
    const root = overlayRoot(parseMountinfo(text));
    if (root === undefined) {
      return create(MountCheckSchema, { ...base, status: MountCheckStatus.UNAVAILABLE, detail: "root mount is not overlayfs" });
    }
    const mountChain = root.lowerDirs.map((d) => layout.mountDirKey(d));
    const problems: string[] = [];
    if (mountChain.join() !== engineChain.join()) {
      problems.push(`mounted lowerdirs [${mountChain.join(", ")}] differ from the runtime's [${engineChain.join(", ")}]`);
    }
    if (layout.mountDirKey(root.upperDir) !== layout.dirKey(c.upperDir)) {
      problems.push(`mounted upperdir ${root.upperDir} differs from the runtime's ${c.upperDir}`);
    }
    return create(MountCheckSchema, {
      engineChain,
      mountChain,
      status: problems.length === 0 ? MountCheckStatus.OK : MountCheckStatus.MISMATCH,
      detail: problems.length === 0 ? `${mountChain.length} lower layers and the upper layer match the root mount` : problems.join("; "),
    });
  }
}

/** A fingerprint of what matters in a graph (not the observation time), to send only changes. */
export function graphFingerprint(g: LayerGraph): string {
  const parts: string[] = [g.state, String(g.pid), String(g.mountCheck?.status ?? 0)];
  for (const l of g.layers) {
    parts.push(l.layerId);
    for (const p of l.processes) parts.push(`${p.pid}:${p.startTimeTicks}:${p.exe}:${p.driftReason}`);
  }
  return parts.join("|");
}
