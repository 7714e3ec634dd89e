/**
 * Keeps the current LDG of every container on this engine and reports changes. Refreshes are
 * serialized; a container that vanishes between list and inspect is dropped quietly and counted.
 */
import { EventEmitter } from "node:events";
import type Docker from "dockerode";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { Logger } from "../../common/log.js";
import { scanContainerProcesses, type ProcInfo } from "../collectors/proc-table.js";
import { isEngineNotFound } from "../runtime/engine.js";
import { parseContainerInspect, type ContainerFacts } from "../runtime/engine-facts.js";
import type { AgentMetrics } from "../metrics.js";
import { ImageLayerResolver } from "./image-layers.js";
import { graphFingerprint, LdgBuilder } from "./ldg-builder.js";

export interface LdgCollectorOptions {
  docker: Docker;
  node: string;
  procRoot: string;
  dockerRoot: string;
  log: Logger;
  metrics: AgentMetrics;
}

export interface LdgCollectorEvents {
  upsert: [LayerGraph];
  delete: [string];
}

export class LdgCollector extends EventEmitter<LdgCollectorEvents> {
  private readonly graphs = new Map<string, { graph: LayerGraph; fp: string }>();
  private readonly facts = new Map<string, ContainerFacts>();
  private readonly resolver: ImageLayerResolver;
  private readonly builder: LdgBuilder;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: LdgCollectorOptions) {
    super();
    this.resolver = new ImageLayerResolver(o.docker, o.dockerRoot);
    this.builder = new LdgBuilder({ node: o.node, procRoot: o.procRoot, dockerRoot: o.dockerRoot });
  }

  /** The current graphs. */
  current(): LayerGraph[] {
    return [...this.graphs.values()].map((e) => e.graph);
  }

  get(id: string): LayerGraph | undefined {
    return this.graphs.get(id)?.graph;
  }

  /** Forgets every cache (used by the cold benchmark and after the engine restarts). */
  clearCaches(): void {
    this.facts.clear();
    this.resolver.clear();
    this.builder.clear();
  }

  /** Marks a container's engine facts stale, so the next refresh inspects it again. */
  invalidate(id: string): void {
    this.facts.delete(id);
  }

  /** Lists every container and rebuilds each graph; emits what changed. */
  refreshAll(): Promise<void> {
    return this.serial(async () => {
      const list = await this.o.docker.listContainers({ all: true });
      const ids = new Set(list.map((c) => c.Id));
      for (const id of [...this.graphs.keys()]) if (!ids.has(id)) this.drop(id);
      for (const id of [...this.facts.keys()]) if (!ids.has(id)) this.facts.delete(id);
      const procs = scanContainerProcesses(this.o.procRoot, ids);
      for (const id of ids) await this.rebuild(id, procs);
      this.o.metrics.containers.set(this.graphs.size);
    });
  }

  /** Re-inspects and rebuilds one container (after an engine event). */
  refreshOne(id: string): Promise<void> {
    return this.serial(async () => {
      this.facts.delete(id);
      const procs = scanContainerProcesses(this.o.procRoot, new Set([id]));
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
    if (this.graphs.delete(id)) this.emit("delete", id);
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async inspect(id: string): Promise<ContainerFacts | undefined> {
    const hit = this.facts.get(id);
    if (hit !== undefined) return hit;
    try {
      const facts = parseContainerInspect(await this.o.docker.getContainer(id).inspect());
      this.facts.set(id, facts);
      return facts;
    } catch (err) {
      if (isEngineNotFound(err)) {
        this.o.metrics.vanished.inc({ what: "container" });
        return undefined;
      }
      throw err;
    }
  }

  private async rebuild(id: string, procs: Map<string, ProcInfo[]>): Promise<void> {
    const started = process.hrtime.bigint();
    const facts = await this.inspect(id);
    if (facts === undefined) {
      this.drop(id);
      return;
    }
    let image;
    try {
      image = await this.resolver.resolve(facts.imageId);
    } catch (err) {
      if (isEngineNotFound(err)) {
        this.o.metrics.vanished.inc({ what: "image" });
        return;
      }
      this.o.metrics.errors.inc({ stage: "image" });
      this.o.log.warn({ container: id, image: facts.imageId, err: String(err) }, "cannot resolve image layers");
      return;
    }
    const graph = this.builder.build(facts, image, facts.pid > 0 ? (procs.get(id) ?? []) : []);
    this.o.metrics.graphBuilds.inc();
    this.o.metrics.graphBuildSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    const fp = graphFingerprint(graph);
    const prev = this.graphs.get(id);
    this.graphs.set(id, { graph, fp });
    if (prev === undefined || prev.fp !== fp) this.emit("upsert", graph);
  }
}
