/**
 * Keeps the current LDG of every container on this node's runtime (Docker or containerd) and
 * reports changes. Refreshes are serialized; a container that vanishes between list and inspect
 * (or whose image or snapshot goes meanwhile) is dropped quietly and counted.
 */
import { EventEmitter } from "node:events";
import type Docker from "dockerode";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { Logger } from "../../common/log.js";
import { scanContainerProcesses, type ProcInfo } from "../runtime/container-processes.js";
import type { ContainerFacts } from "../runtime/engine-facts.js";
import { DockerRuntime } from "../runtime/docker-runtime.js";
import type { ContainerRuntime } from "../runtime/runtime.js";
import type { AgentMetrics } from "../metrics.js";
import type { ProcessTable } from "../telemetry/process-table.js";
import type { ResolvedImage } from "./image-layers.js";
import { graphFingerprint, LdgBuilder, type Attribution } from "./ldg-builder.js";

export type LdgCollectorOptions = LdgCollectorBase & ({ runtime: ContainerRuntime } | { docker: Docker; dockerRoot: string });

interface LdgCollectorBase {
  node: string;
  procRoot: string;
  log: Logger;
  metrics: AgentMetrics;
  /**
   * Where processes come from. With a table, a container's pids come from its cgroup and a
   * periodic refresh skips containers whose cgroup CPU counter did not move; without one, every
   * refresh scans all of /proc.
   */
  processes?: ProcessTable;
}

/** A running container as the telemetry side needs it. */
export interface RunningContainer {
  id: string;
  name: string;
  pid: number;
  facts: ContainerFacts;
  image: ResolvedImage;
}

/** Containers whose facts are read at once during a list pass. */
const PREFETCH_PARALLEL = 4;

export interface LdgCollectorEvents {
  upsert: [LayerGraph];
  delete: [string];
}

export class LdgCollector extends EventEmitter<LdgCollectorEvents> {
  private readonly graphs = new Map<string, { graph: LayerGraph; fp: string }>();
  private readonly facts = new Map<string, ContainerFacts>();
  /** Facts and image of each container as of its last graph, for attribution by telemetry. */
  private readonly resolved = new Map<string, RunningContainer>();
  private readonly builder: LdgBuilder;
  readonly runtime: ContainerRuntime;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: LdgCollectorOptions) {
    super();
    this.runtime = "runtime" in o ? o.runtime : new DockerRuntime({ docker: o.docker, dockerRoot: o.dockerRoot });
    this.builder = new LdgBuilder({ node: o.node, procRoot: o.procRoot, runtime: this.runtime.info.kind, layout: this.runtime.layout });
  }

  /** The current graphs. */
  current(): LayerGraph[] {
    return [...this.graphs.values()].map((e) => e.graph);
  }

  get(id: string): LayerGraph | undefined {
    return this.graphs.get(id)?.graph;
  }

  /** Running containers (pid > 0) as of their last graph. */
  running(): RunningContainer[] {
    return [...this.resolved.values()].filter((r) => r.pid > 0);
  }

  /** The images of every container known (running or not). */
  images(): ResolvedImage[] {
    const out = new Map<string, ResolvedImage>();
    for (const r of this.resolved.values()) out.set(r.image.id, r.image);
    return [...out.values()];
  }

  container(id: string): RunningContainer | undefined {
    return this.resolved.get(id);
  }

  /** The layer providing a live process's executable (see LdgBuilder.attribute). */
  attributeProcess(r: RunningContainer, p: Pick<ProcInfo, "exe" | "exeDeleted">): Attribution {
    return this.builder.attribute(r.facts, r.image, p);
  }

  /** The layer providing an executed path, its symlinks followed inside the container's root. */
  attributePath(r: RunningContainer, path: string): Attribution & { path: string } {
    return this.builder.attributePath(r.facts, r.image, path, `${this.o.procRoot}/${r.pid}/root`);
  }

  libraryLayers(r: RunningContainer, paths: readonly string[]): string[] {
    return this.builder.libraryLayers(r.facts, r.image, paths);
  }

  layerName(id: string, layerId: string): string {
    return this.graphs.get(id)?.graph.layers.find((l) => l.layerId === layerId)?.name ?? "";
  }

  /** Forgets every cache (used by the cold benchmark and after the engine restarts). */
  clearCaches(): void {
    this.facts.clear();
    for (const id of this.o.processes?.ids() ?? []) this.o.processes?.forget(id);
    this.runtime.clearCaches();
    this.builder.clear();
  }

  /** Marks a container's engine facts stale, so the next refresh inspects it again. */
  invalidate(id: string): void {
    this.facts.delete(id);
  }

  /** Lists every container and rebuilds each graph; emits what changed. */
  refreshAll(): Promise<void> {
    return this.serial(async () => {
      const ids = new Set(await this.runtime.listContainers());
      for (const id of [...this.graphs.keys()]) if (!ids.has(id)) this.drop(id);
      for (const id of [...this.facts.keys()]) if (!ids.has(id)) this.facts.delete(id);
      await this.rebuildChanged(ids, true);
    });
  }

  /**
   * Rebuilds the graphs of the containers already known whose processes may have changed,
   * without asking the engine for its list (events report containers coming and going).
   */
  refreshKnown(): Promise<void> {
    return this.serial(async () => {
      await this.rebuildChanged(new Set(this.graphs.keys()));
    });
  }

  private async rebuildChanged(ids: ReadonlySet<string>, listed = false): Promise<void> {
    const table = this.o.processes;
    if (listed) await this.prefetch([...ids].filter((id) => !this.facts.has(id)));
    const procs = table === undefined ? scanContainerProcesses(this.o.procRoot, ids) : undefined;
    for (const id of ids) {
      const facts = this.facts.get(id);
      // Nothing ran in the container since its graph was built: its processes are unchanged.
      if (table !== undefined && facts !== undefined && this.graphs.has(id) && (facts.pid <= 0 || !table.ranSince(id, facts.pid, "ldg"))) continue;
      // (A stopped container changes only through engine events, which drop its cached facts.)
      await this.rebuild(id, procs, listed);
    }
    this.o.metrics.containers.set(this.graphs.size);
  }

  /**
   * Reads the facts of the containers a list pass has not seen yet a few at a time (a runtime
   * answers several requests at once); what fails or vanished is read again, and reported, by the
   * pass itself.
   */
  private async prefetch(ids: readonly string[]): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++] as string;
        const facts = await this.runtime.inspect(id, { listed: true }).catch(() => undefined);
        if (facts !== undefined) this.facts.set(id, facts);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PREFETCH_PARALLEL, ids.length) }, worker));
  }

  /** Re-inspects and rebuilds one container (after an engine event). */
  refreshOne(id: string): Promise<void> {
    return this.serial(async () => {
      this.facts.delete(id);
      const procs = this.o.processes === undefined ? scanContainerProcesses(this.o.procRoot, new Set([id])) : undefined;
      await this.rebuild(id, procs);
      this.o.metrics.containers.set(this.graphs.size);
    });
  }

  remove(id: string): Promise<void> {
    return this.serial(async () => {
      this.facts.delete(id);
      this.drop(id);
      this.o.metrics.containers.set(this.graphs.size);
    });
  }

  private drop(id: string): void {
    this.builder.forget(id);
    this.resolved.delete(id);
    this.o.processes?.forget(id);
    if (this.graphs.delete(id)) this.emit("delete", id);
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async inspect(id: string, listed: boolean): Promise<ContainerFacts | undefined> {
    const hit = this.facts.get(id);
    if (hit !== undefined) return hit;
    const facts = await this.runtime.inspect(id, { listed });
    if (facts === undefined) {
      this.o.metrics.vanished.inc({ what: "container" });
      return undefined;
    }
    this.facts.set(id, facts);
    return facts;
  }

  private processesOf(facts: ContainerFacts, scanned: Map<string, ProcInfo[]> | undefined): ProcInfo[] {
    if (facts.pid <= 0) return [];
    if (scanned !== undefined) return scanned.get(facts.id) ?? [];
    return this.o.processes?.refresh(facts.id, facts.pid, false).map((t) => t.info) ?? [];
  }

  private async rebuild(id: string, procs: Map<string, ProcInfo[]> | undefined, listed = false): Promise<void> {
    const started = process.hrtime.bigint();
    const facts = await this.inspect(id, listed);
    if (facts === undefined) {
      this.drop(id);
      return;
    }
    let image: ResolvedImage | undefined;
    try {
      image = await this.runtime.resolveImage(facts);
      if (image === undefined) {
        this.o.metrics.vanished.inc({ what: "image" });
        return;
      }
    } catch (err) {
      this.o.metrics.errors.inc({ stage: "image" });
      this.o.log.warn({ container: id, image: facts.imageId, err: String(err) }, "cannot resolve image layers");
      return;
    }
    const graph = this.builder.build(facts, image, this.processesOf(facts, procs));
    this.resolved.set(id, { id, name: facts.name, pid: facts.pid, facts, image });
    this.o.metrics.graphBuilds.inc();
    this.o.metrics.graphBuildSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    const fp = graphFingerprint(graph);
    const prev = this.graphs.get(id);
    this.graphs.set(id, { graph, fp });
    if (prev === undefined || prev.fp !== fp) this.emit("upsert", graph);
  }
}
