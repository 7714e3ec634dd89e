/**
 * The agent's telemetry: every tick (default 1 s) it samples the processes, cgroup and network of
 * each running container, attributes each process's metrics to the layer that provides its
 * executable, and every window (default 10 s) emits one WindowSummary per container with a
 * feature vector per layer (models/FEATURES.md). Exec events come from eBPF when it can run here,
 * with fork and exit events so that processes too short for a tick are charged at exit
 * (lifecycle.ts), else from /proc polling; drift detections are emitted as soon as they are seen.
 *
 * This class wires the parts: the exec source (exec-source.ts), the exec tracker, the process
 * lifecycle records (lifecycle.ts), the sampler (layer-sampler.ts) and the window builder
 * (window-builder.ts), and owns the tick timer.
 */
import { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import { TelemetryStatusSchema, type Detection, type TelemetryStatus, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { Logger } from "../../common/log.js";
import type { LdgCollector } from "../layers/ldg-collector.js";
import type { AgentMetrics } from "../metrics.js";
import { ExecSource, type ExecSourceChoice } from "./exec-source.js";
import { ExecTracker, type ExecSighting, type ExecSourceKind } from "./exec-tracker.js";
import { LayerSampler, type ExitStats } from "./layer-sampler.js";
import { ProcessLifecycle } from "./lifecycle.js";
import type { ProcessTable } from "./process-table.js";
import { WindowBuilder } from "./window-builder.js";

export type { ExecSourceChoice } from "./exec-source.js";

export interface TelemetryOptions {
  node: string;
  procRoot: string;
  collector: LdgCollector;
  processes: ProcessTable;
  log: Logger;
  metrics: AgentMetrics;
  /** Sampling tick, ms (default 1000). */
  sampleMs?: number;
  /** Window length, ms (default 10000). */
  windowMs?: number;
  /**
   * How often every file of every process is read regardless of activity (default 60000): the
   * safety net under the activity gating (see models/FEATURES.md, "Sampling costs").
   */
  fullEveryMs?: number;
  /** auto (eBPF when available, else polling), ebpf (required), proc (polling only). */
  execSource?: ExecSourceChoice;
  bpftrace?: string;
}

export interface TelemetryEvents {
  /** One per container per window. */
  window: [WindowSummary];
  /** Every container's window that ended together (what goes into one spool item). */
  windows: [WindowSummary[]];
  detection: [Detection];
}

export class Telemetry extends EventEmitter<TelemetryEvents> {
  private readonly sampleMs: number;
  private readonly windowMs: number;
  readonly tracker: ExecTracker;
  private readonly execSource: ExecSource;
  private readonly builder: WindowBuilder;
  private readonly sampler: LayerSampler;
  /** Kernel fork/exec/exit records (public for tests, which feed it events). */
  readonly lifecycle: ProcessLifecycle;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: TelemetryOptions) {
    super();
    this.sampleMs = o.sampleMs ?? 1000;
    this.windowMs = Math.max(this.sampleMs, o.windowMs ?? 10_000);
    const fullEveryMs = Math.max(this.sampleMs, o.fullEveryMs ?? 60_000);
    this.tracker = new ExecTracker({
      node: o.node,
      procRoot: o.procRoot,
      collector: o.collector,
      onExec: (s) => this.onExec(s),
      onDetection: (d, s) => this.onDetection(d, s),
    });
    this.lifecycle = new ProcessLifecycle({ containerOf: (mntns, monoNs) => this.tracker.containerOf(mntns, monoNs) });
    this.execSource = new ExecSource({
      procRoot: o.procRoot,
      log: o.log,
      metrics: o.metrics,
      choice: o.execSource ?? "auto",
      ...(o.bpftrace !== undefined ? { bpftrace: o.bpftrace } : {}),
      pollMs: this.sampleMs,
      onExec: (ev) => this.tracker.onEbpf(ev),
      onFork: (ev) => this.lifecycle.onFork(ev),
      onProcessExit: (ev) => this.lifecycle.onExit(ev),
    });
    this.builder = new WindowBuilder({ node: o.node, windowMs: this.windowMs, tickMs: this.sampleMs, names: o.collector });
    this.sampler = new LayerSampler({
      procRoot: o.procRoot,
      collector: o.collector,
      processes: o.processes,
      tracker: this.tracker,
      execSource: this.execSource,
      windows: this.builder,
      passesPerFull: Math.max(1, Math.round(fullEveryMs / this.sampleMs)),
      lifecycle: this.lifecycle,
    });
    o.collector.on("upsert", () => this.tracker.rebuild());
  }

  get windowSeconds(): number {
    return this.windowMs / 1000;
  }

  /** Chooses the exec source (logging once which one is active and why), then starts ticking. */
  async start(): Promise<void> {
    await this.execSource.start();
    this.tracker.rebuild();
    this.builder.begin(new Date());
    this.timer = setInterval(() => this.safeTick(), this.sampleMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.tracker.stop();
    await this.execSource.stop();
  }

  status(): TelemetryStatus {
    const bpf = this.execSource.counters;
    return create(TelemetryStatusSchema, {
      execSource: this.execSource.kind,
      execSourceReason: this.execSource.reason,
      execEvents: BigInt(bpf?.events ?? this.tracker.stats.events),
      execEventsLost: BigInt(bpf?.lost ?? 0),
      execLinesMalformed: BigInt(bpf?.malformed ?? 0),
      vanished: BigInt(this.o.processes.stats.vanished),
      windowSeconds: Math.round(this.windowMs / 1000),
      sampleIntervalMs: this.sampleMs,
    });
  }

  /** Exit charging's counts: charged, unattributed (no layer found), duplicates (an identity seen twice). */
  get exitStats(): Readonly<ExitStats> {
    return this.sampler.exitStats;
  }

  get activeExecSource(): ExecSourceKind {
    return this.execSource.kind;
  }

  private safeTick(): void {
    try {
      this.tick();
    } catch (err) {
      this.o.metrics.errors.inc({ stage: "telemetry" });
      this.o.log.warn({ err: String(err) }, "telemetry tick failed");
    }
  }

  /**
   * One sampling pass. Public for tests and the benchmark (`forceFull` reads every file of every
   * process, as the first pass of each window does).
   */
  tick(now = new Date(), forceFull = false): void {
    const started = process.hrtime.bigint();
    const running = this.o.collector.running();
    this.sampler.pass(running, forceFull);
    // Stopped or removed containers: their last partial windows are emitted now.
    for (const w of this.builder.endGone(new Set(running.map((r) => r.id)), now)) {
      this.sampler.forget(w.containerId);
      this.emitWindows([w]);
    }
    this.builder.endTick(now);
    this.o.metrics.samplePasses.inc();
    this.o.metrics.samplePassSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (this.builder.due(now)) this.flush(now);
  }

  /** Ends the current window for every container. Public for tests. */
  flush(now = new Date()): void {
    this.emitWindows(this.builder.flush(this.o.collector.running(), now));
  }

  private emitWindows(batch: WindowSummary[]): void {
    if (batch.length === 0) return;
    this.o.metrics.windows.inc(batch.length);
    for (const w of batch) {
      this.o.metrics.exitsCharged.inc(w.exitsCharged);
      if (w.cpuAttributedShare?.available === true) this.o.metrics.cpuAttributedShare.observe(w.cpuAttributedShare.value);
    }
    for (const w of batch) this.emit("window", w);
    this.emit("windows", batch);
  }

  private onExec(s: ExecSighting): void {
    this.o.metrics.execEvents.inc({ source: s.source });
    if (s.startTimeTicks !== undefined && s.monoNs !== undefined) {
      this.lifecycle.onExec(s.pid, { containerId: s.container.id, layerId: s.attribution.layerId, startTimeTicks: s.startTimeTicks, monoNs: s.monoNs });
    }
    this.builder.layer(s.container.id, s.attribution.layerId).counts.exec_count++;
  }

  private onDetection(d: Detection, s: ExecSighting): void {
    this.o.metrics.detections.inc({ rule: d.rule, reason: d.reason });
    this.builder.layer(s.container.id, s.attribution.layerId).counts.drift_events++;
    this.o.log.warn({ container: d.containerName || d.containerId, layer: d.layerId, path: d.path, pid: d.pid, reason: d.reason, source: d.source }, "drift: executable not from any image layer was run");
    this.emit("detection", d);
  }
}
