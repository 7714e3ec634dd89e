/**
 * The agent's telemetry: every tick (default 1 s) it samples the processes, cgroup and network of
 * each running container, attributes each process's metrics to the layer that provides its
 * executable, and every window (default 10 s) emits one WindowSummary per container with a
 * feature vector per layer (models/FEATURES.md). Exec events come from eBPF when it can run here,
 * else from /proc polling; drift detections are emitted as soon as they are seen.
 */
import { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CgroupFeaturesSchema,
  GaugeSchema,
  LayerFeaturesSchema,
  NetFeaturesSchema,
  TelemetryStatusSchema,
  WindowSummarySchema,
  type CgroupFeatures,
  type Detection,
  type Gauge,
  type NetFeatures,
  type TelemetryStatus,
  type WindowSummary,
} from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { encodeFeatures, FEATURE_VERSION, featureIndex } from "../../models/features.js";
import type { Logger } from "../../common/log.js";
import { readProcFile, readProcLink } from "../runtime/proc-files.js";
import type { Attribution } from "../layers/ldg-builder.js";
import type { LdgCollector, RunningContainer } from "../layers/ldg-collector.js";
import type { AgentMetrics } from "../metrics.js";
import type { CgroupSample } from "./cgroup-sampler.js";
import { BpfExecSource, ebpfUnavailableReason } from "./exec-ebpf.js";
import { ExecTracker, type ExecSighting, type ExecSourceKind } from "./exec-tracker.js";
import { NetSampler, type NetSample } from "./net-sampler.js";
import { CLOCK_TICKS_PER_SECOND, PAGE_SIZE } from "./proc-sampler.js";
import type { ProcessTable, TrackedProcess } from "./process-table.js";
import { emptyMetrics, LayerWindow, METRIC_COUNT, type MetricVector } from "./windows.js";

export type ExecSourceChoice = "auto" | "ebpf" | "proc";

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

/** What the telemetry remembers of a process between ticks (its counters as last sampled). */
interface ProcMemory {
  comm: string;
  exe: string;
  counters: MetricVector;
  cpuTicks: number;
  attribution: Attribution;
}

interface ContainerState {
  procs: Map<string, ProcMemory>;
  layers: Map<string, LayerWindow>;
  /** Uptime (clock ticks) at the last sample: processes started after it are wholly new. */
  lastUptime: number;
  first: boolean;
  cgroupFirst: CgroupSample | undefined;
  cgroupLast: CgroupSample | undefined;
  cgroupVersion: string;
  netFirst: NetSample | undefined;
  netLast: NetSample | undefined;
  knownSockets: Set<number>;
}

const I = {
  cpu: 0,
  rss: 1,
  threads: 2,
  fds: 3,
  rchar: 4,
  wchar: 5,
  readBytes: 6,
  writeBytes: 7,
  ctxVol: 8,
  ctxInvol: 9,
  minflt: 10,
  majflt: 11,
} as const;

function countersOf(t: TrackedProcess, v: MetricVector): MetricVector {
  v[I.cpu] = t.stat.cpuTicks / CLOCK_TICKS_PER_SECOND;
  v[I.rss] = t.stat.rssPages * PAGE_SIZE;
  v[I.threads] = t.stat.threads;
  v[I.fds] = t.detail.fds;
  v[I.rchar] = t.detail.rchar;
  v[I.wchar] = t.detail.wchar;
  v[I.readBytes] = t.detail.readBytes;
  v[I.writeBytes] = t.detail.writeBytes;
  v[I.ctxVol] = t.detail.ctxVoluntary;
  v[I.ctxInvol] = t.detail.ctxInvoluntary;
  v[I.minflt] = t.stat.minflt;
  v[I.majflt] = t.stat.majflt;
  return v;
}
const GAUGES: readonly number[] = [I.rss, I.threads, I.fds];

export class Telemetry extends EventEmitter<TelemetryEvents> {
  private readonly sampleMs: number;
  private readonly windowMs: number;
  private readonly fullEveryMs: number;
  private readonly scratch = emptyMetrics();
  private readonly delta = emptyMetrics();
  private readonly net: NetSampler;
  private readonly states = new Map<string, ContainerState>();
  readonly tracker: ExecTracker;
  private bpf: BpfExecSource | undefined;
  private timer: NodeJS.Timeout | undefined;
  private windowStart = new Date();
  private windowTicks = 0;
  private tickNo = 0;
  private execSource: ExecSourceKind = "proc-poll";
  private execSourceReason = "";
  private stopped = false;

  constructor(private readonly o: TelemetryOptions) {
    super();
    this.sampleMs = o.sampleMs ?? 1000;
    this.windowMs = Math.max(this.sampleMs, o.windowMs ?? 10_000);
    this.fullEveryMs = Math.max(this.sampleMs, o.fullEveryMs ?? 60_000);
    this.net = new NetSampler({ procRoot: o.procRoot });
    this.tracker = new ExecTracker({
      node: o.node,
      procRoot: o.procRoot,
      collector: o.collector,
      onExec: (s) => this.onExec(s),
      onDetection: (d, s) => this.onDetection(d, s),
    });
    o.collector.on("upsert", () => this.tracker.rebuild());
  }

  get windowSeconds(): number {
    return this.windowMs / 1000;
  }

  /** Chooses the exec source (logging once which one is active and why), then starts ticking. */
  async start(): Promise<void> {
    await this.chooseExecSource();
    this.tracker.rebuild();
    this.windowStart = new Date();
    this.timer = setInterval(() => this.safeTick(), this.sampleMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.tracker.stop();
    await this.bpf?.stop();
  }

  status(): TelemetryStatus {
    const bpf = this.bpf?.counters;
    return create(TelemetryStatusSchema, {
      execSource: this.execSource,
      execSourceReason: this.execSourceReason,
      execEvents: BigInt(bpf?.events ?? this.tracker.stats.events),
      execEventsLost: BigInt(bpf?.lost ?? 0),
      execLinesMalformed: BigInt(bpf?.malformed ?? 0),
      vanished: BigInt(this.o.processes.stats.vanished),
      windowSeconds: Math.round(this.windowMs / 1000),
      sampleIntervalMs: this.sampleMs,
    });
  }

  get activeExecSource(): ExecSourceKind {
    return this.execSource;
  }

  private async chooseExecSource(): Promise<void> {
    const want = this.o.execSource ?? "auto";
    const log = this.o.log;
    if (want === "proc") {
      this.usePolling("configured (--exec-source proc)");
      return;
    }
    const why = ebpfUnavailableReason(this.o.bpftrace === undefined ? {} : { bpftrace: this.o.bpftrace });
    if (why !== undefined) {
      if (want === "ebpf") throw new Error(`eBPF exec events were required but cannot run: ${why}`);
      this.usePolling(why);
      return;
    }
    // The host's mount namespace: init's, else kthreadd's (kernel threads always live in the host's;
    // some hosts refuse even root a look at pid 1's namespaces).
    const nsLink = readProcLink(`${this.o.procRoot}/1/ns/mnt`) ?? readProcLink(`${this.o.procRoot}/2/ns/mnt`);
    const hostMntNs = Number(/\[(\d+)\]/.exec(nsLink ?? "")?.[1] ?? NaN);
    const bpf = new BpfExecSource({
      log,
      ...(Number.isFinite(hostMntNs) ? { hostMntNs } : {}),
      ...(this.o.bpftrace !== undefined ? { bpftrace: this.o.bpftrace } : {}),
    });
    bpf.on("exec", (ev) => this.tracker.onEbpf(ev));
    bpf.on("lost", (n) => this.o.metrics.execEventsLost.inc(n));
    bpf.on("exit", (reason) => {
      if (this.stopped || this.bpf !== bpf) return;
      this.bpf = undefined;
      this.usePolling(`bpftrace stopped: ${reason}`);
    });
    try {
      await bpf.start();
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (want === "ebpf") throw err;
      this.usePolling(`bpftrace failed to start: ${reason}`);
      return;
    }
    this.bpf = bpf;
    this.execSource = "ebpf";
    this.execSourceReason = "bpftrace tracepoint:sched:sched_process_exec";
    this.o.metrics.execSource.set({ source: "ebpf" }, 1);
    log.info({ execSource: "ebpf" }, "exec events: eBPF (bpftrace sched_process_exec), short-lived processes included");
  }

  private usePolling(reason: string): void {
    this.execSource = "proc-poll";
    this.execSourceReason = reason;
    this.o.metrics.execSource.set({ source: "ebpf" }, 0);
    this.o.metrics.execSource.set({ source: "proc-poll" }, 1);
    this.o.log.warn({ execSource: "proc-poll", reason }, `exec events: /proc polling every ${this.sampleMs} ms (processes shorter than that can be missed): ${reason}`);
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
    const ticksPerFull = Math.max(1, Math.round(this.fullEveryMs / this.sampleMs));
    const full = forceFull || this.tickNo % ticksPerFull === 0;
    this.tickNo++;
    const uptime = readUptimeTicks(this.o.procRoot);
    const running = this.o.collector.running();
    const live = new Set<string>();
    const firstTick = this.windowTicks === 0;
    for (const r of running) {
      live.add(r.id);
      this.sampleContainer(r, full, uptime, firstTick);
    }
    for (const id of [...this.states.keys()]) {
      if (!live.has(id)) {
        // Stopped or removed: its last partial window is emitted now.
        const st = this.states.get(id);
        if (st !== undefined) this.emitWindows([this.endWindow(id, this.o.collector.container(id)?.name ?? "", st, now)]);
        this.states.delete(id);
      }
    }
    this.windowTicks++;
    this.o.metrics.samplePasses.inc();
    this.o.metrics.samplePassSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (now.getTime() - this.windowStart.getTime() >= this.windowMs - this.sampleMs / 2) this.flush(now);
  }

  /** Ends the current window for every container. Public for tests. */
  flush(now = new Date()): void {
    const batch: WindowSummary[] = [];
    for (const r of this.o.collector.running()) {
      const st = this.states.get(r.id);
      if (st !== undefined) batch.push(this.endWindow(r.id, r.name, st, now));
    }
    this.windowStart = now;
    this.windowTicks = 0;
    this.emitWindows(batch);
  }

  private emitWindows(batch: WindowSummary[]): void {
    if (batch.length === 0) return;
    for (const w of batch) this.emit("window", w);
    this.emit("windows", batch);
  }

  private state(id: string): ContainerState {
    let st = this.states.get(id);
    if (st === undefined) {
      st = {
        procs: new Map(),
        layers: new Map(),
        lastUptime: 0,
        first: true,
        cgroupFirst: undefined,
        cgroupLast: undefined,
        cgroupVersion: "",
        netFirst: undefined,
        netLast: undefined,
        knownSockets: new Set(),
      };
      this.states.set(id, st);
    }
    return st;
  }

  private layer(st: ContainerState, layerId: string): LayerWindow {
    let w = st.layers.get(layerId);
    if (w === undefined) {
      w = new LayerWindow();
      // Ticks already passed in this window count as empty ones.
      for (let i = 0; i < this.windowTicks; i++) w.addEmptyTick();
      st.layers.set(layerId, w);
    }
    return w;
  }

  private sampleContainer(r: RunningContainer, full: boolean, uptime: number, firstTickOfWindow: boolean): void {
    const table = this.o.processes;
    const st = this.state(r.id);
    const ran = table.ranSince(r.id, r.pid, "telemetry");
    const totals = new Map<string, { v: MetricVector; n: number }>();
    const add = (layerId: string, v: MetricVector) => {
      let t = totals.get(layerId);
      if (t === undefined) totals.set(layerId, (t = { v: emptyMetrics(), n: 0 }));
      for (let i = 0; i < METRIC_COUNT; i++) t.v[i] = (t.v[i] ?? 0) + (v[i] ?? 0);
      t.n++;
    };

    if (ran || full || st.first) {
      const procs = table.refresh(r.id, r.pid, full);
      const next = new Map<string, ProcMemory>();
      const active: TrackedProcess[] = [];
      for (const t of procs) {
        const counters = countersOf(t, this.scratch);
        const prev = st.procs.get(t.key);
        let mem: ProcMemory;
        const delta = this.delta;
        delta.fill(0);
        if (prev === undefined || prev.comm !== t.stat.comm || prev.exe !== t.info.exe) {
          const attribution = this.o.collector.attributeProcess(r, t.info);
          mem = { comm: t.stat.comm, exe: t.info.exe, counters: Float64Array.from(counters), cpuTicks: t.stat.cpuTicks, attribution };
          const w = this.layer(st, attribution.layerId);
          if (prev === undefined) {
            for (const l of this.o.collector.libraryLayers(r, table.proc.mappedFiles(t.info.pid, t.info.exe))) if (l !== attribution.layerId) w.libraryLayers.add(l);
            // Started since the last look: everything it did happened in this window.
            const startedSince = !st.first && Number(t.stat.startTime) >= st.lastUptime;
            if (startedSince) {
              w.counts.process_starts++;
              delta.set(counters);
            }
            if (st.first) this.tracker.reportExisting(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
            else if (this.execSource === "proc-poll") this.tracker.onPolled(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
          } else {
            // Re-exec'd: counters carry on, the layer may change.
            for (let i = 0; i < METRIC_COUNT; i++) delta[i] = Math.max(0, (counters[i] ?? 0) - (prev.counters[i] ?? 0));
            if (this.execSource === "proc-poll") this.tracker.onPolled(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
          }
          active.push(t);
        } else {
          mem = prev;
          for (let i = 0; i < METRIC_COUNT; i++) delta[i] = Math.max(0, (counters[i] ?? 0) - (prev.counters[i] ?? 0));
          if (t.stat.cpuTicks !== prev.cpuTicks || counters[I.ctxVol] !== prev.counters[I.ctxVol] || counters[I.ctxInvol] !== prev.counters[I.ctxInvol]) active.push(t);
          mem.counters.set(counters);
          mem.cpuTicks = t.stat.cpuTicks;
        }
        for (const g of GAUGES) delta[g] = counters[g] ?? 0;
        next.set(t.key, mem);
        add(mem.attribution.layerId, delta);
      }
      st.procs = next;
      this.sampleCgroup(r, st);
      this.sampleNet(r, st, active);
    } else {
      // Nothing in the container ran: counters did not move, gauges are as last read.
      const v = this.delta;
      for (const mem of st.procs.values()) {
        v.fill(0);
        for (const g of GAUGES) v[g] = mem.counters[g] ?? 0;
        add(mem.attribution.layerId, v);
      }
    }
    for (const [layerId, t] of totals) this.layer(st, layerId).addTick(t.v, t.n, firstTickOfWindow);
    for (const [layerId, w] of st.layers) if (!totals.has(layerId) && w.tickCount < this.windowTicks + 1) w.addEmptyTick();
    st.lastUptime = uptime;
    st.first = false;
  }

  private sampleCgroup(r: RunningContainer, st: ContainerState): void {
    const paths = this.o.processes.paths(r.id, r.pid);
    if (paths === undefined) return;
    const s = this.o.processes.cgroups.sample(paths);
    if (st.cgroupFirst === undefined) st.cgroupFirst = s;
    st.cgroupLast = s;
    st.cgroupVersion = paths.version;
  }

  private sampleNet(r: RunningContainer, st: ContainerState, active: readonly TrackedProcess[]): void {
    const s = this.net.sample(r.pid, this.tickNo);
    if (s === undefined) return;
    const firstLook = st.netLast === undefined;
    if (st.netFirst === undefined) st.netFirst = s;
    st.netLast = s;
    const fresh: number[] = [];
    for (const inode of s.tcpSockets.keys()) if (!st.knownSockets.has(inode)) fresh.push(inode);
    st.knownSockets = new Set(s.tcpSockets.keys());
    if (firstLook || fresh.length === 0 || active.length === 0) return;
    // New sockets: find which of the processes that ran own them (fd -> socket:[inode]).
    const want = new Set(fresh);
    for (const t of active) {
      for (const inode of this.o.processes.proc.socketInodes(t.info.pid)) {
        if (!want.delete(inode)) continue;
        const mem = st.procs.get(t.key);
        if (mem !== undefined) this.layer(st, mem.attribution.layerId).counts.new_connections++;
      }
      if (want.size === 0) break;
    }
  }

  private onExec(s: ExecSighting): void {
    this.o.metrics.execEvents.inc({ source: s.source });
    this.layer(this.state(s.container.id), s.attribution.layerId).counts.exec_count++;
  }

  private onDetection(d: Detection, s: ExecSighting): void {
    this.o.metrics.detections.inc({ rule: d.rule, reason: d.reason });
    const st = this.state(s.container.id);
    this.layer(st, s.attribution.layerId).counts.drift_events++;
    this.o.log.warn({ container: d.containerName || d.containerId, layer: d.layerId, path: d.path, pid: d.pid, reason: d.reason, source: d.source }, "drift: executable not from any image layer was run");
    this.emit("detection", d);
  }

  private endWindow(id: string, name: string, st: ContainerState, end: Date): WindowSummary {
    const seconds = Math.max(0.001, (end.getTime() - this.windowStart.getTime()) / 1000);
    const layers = [];
    for (const [layerId, w] of st.layers) {
      const f = w.features(this.windowTicks, seconds);
      layers.push(
        create(LayerFeaturesSchema, {
          layerId,
          layerName: this.o.collector.layerName(id, layerId),
          featuresF64le: encodeFeatures(f),
          libraryLayers: [...w.libraryLayers],
          cpuSeconds: f[featureIndex("cpu_seconds.sum")] ?? 0,
          rssBytes: f[featureIndex("rss_bytes.max")] ?? 0,
          readBytes: f[featureIndex("read_bytes.sum")] ?? 0,
          writeBytes: f[featureIndex("write_bytes.sum")] ?? 0,
          processes: Math.round(f[featureIndex("process_count")] ?? 0),
          execs: w.counts.exec_count,
          newConnections: w.counts.new_connections,
          driftEvents: w.counts.drift_events,
        }),
      );
    }
    const summary = create(WindowSummarySchema, {
      node: this.o.node,
      containerId: id,
      containerName: name,
      start: timestampFromDate(this.windowStart),
      end: timestampFromDate(end),
      ticks: this.windowTicks,
      featureVersion: FEATURE_VERSION,
      layers,
      cgroup: cgroupFeatures(st.cgroupFirst, st.cgroupLast, st.cgroupVersion),
      net: netFeatures(st.netFirst, st.netLast),
    });
    // The next window starts where this one ended.
    st.layers = new Map();
    st.cgroupFirst = st.cgroupLast;
    st.netFirst = st.netLast;
    this.o.metrics.windows.inc();
    return summary;
  }
}


/** /proc/uptime in clock ticks (the unit of a process's start time). */
function readUptimeTicks(procRoot: string): number {
  const t = readProcFile(`${procRoot}/uptime`);
  const s = t === undefined ? NaN : Number(t.slice(0, t.indexOf(" ")));
  return Number.isFinite(s) ? Math.floor(s * CLOCK_TICKS_PER_SECOND) : 0;
}

function gauge(v: number | null | undefined, reason: string | undefined): Gauge {
  return v === null || v === undefined || !Number.isFinite(v)
    ? create(GaugeSchema, { available: false, reason: reason ?? "not sampled" })
    : create(GaugeSchema, { available: true, value: v });
}

function delta(a: number | null | undefined, b: number | null | undefined): number | null {
  return a === null || a === undefined || b === null || b === undefined ? null : Math.max(0, b - a);
}

export function cgroupFeatures(first: CgroupSample | undefined, last: CgroupSample | undefined, version = ""): CgroupFeatures {
  if (last === undefined) {
    const no = gauge(null, "cgroup not found for the container");
    return create(CgroupFeaturesSchema, { version: "", cpuSeconds: no, throttledPeriods: no, throttledSeconds: no, memoryBytes: no, memoryLimitBytes: no, oomEvents: no, oomKills: no, pids: no });
  }
  const f = first ?? last;
  const why = (k: string) => last.unavailable[k];
  const cpu = delta(f.cpuUsageNs, last.cpuUsageNs);
  const thrNs = delta(f.cpuThrottledNs, last.cpuThrottledNs);
  return create(CgroupFeaturesSchema, {
    version,
    cpuSeconds: gauge(cpu === null ? null : cpu / 1e9, why("cpuUsageNs")),
    throttledPeriods: gauge(delta(f.cpuThrottledPeriods, last.cpuThrottledPeriods), why("cpuThrottledPeriods")),
    throttledSeconds: gauge(thrNs === null ? null : thrNs / 1e9, why("cpuThrottledNs")),
    memoryBytes: gauge(last.memoryBytes, why("memoryBytes")),
    memoryLimitBytes: gauge(last.memoryLimitBytes, why("memoryLimitBytes") ?? (last.memoryUnlimited ? "unlimited" : undefined)),
    memoryUnlimited: last.memoryUnlimited,
    oomEvents: gauge(delta(f.oomEvents, last.oomEvents), why("oomEvents")),
    oomKills: gauge(delta(f.oomKills, last.oomKills), why("oomKills")),
    pids: gauge(last.pidsCurrent, why("pidsCurrent")),
  });
}

export function netFeatures(first: NetSample | undefined, last: NetSample | undefined): NetFeatures {
  if (last === undefined) {
    const no = gauge(null, "network namespace not sampled");
    return create(NetFeaturesSchema, { shared: false, rxBytes: no, txBytes: no, rxPackets: no, txPackets: no });
  }
  if (last.shared) {
    // The host's counters: not this container's traffic.
    const shared = gauge(null, "host network namespace: counters are the host's, not attributed");
    return create(NetFeaturesSchema, { shared: true, rxBytes: shared, txBytes: shared, rxPackets: shared, txPackets: shared });
  }
  const f = first ?? last;
  const tcp: Record<string, number> = {};
  for (const [k, v] of Object.entries(last.tcpByState)) if (v > 0) tcp[k] = v;
  return create(NetFeaturesSchema, {
    shared: false,
    rxBytes: gauge(delta(f.rxBytes, last.rxBytes), last.unavailable["rxBytes"]),
    txBytes: gauge(delta(f.txBytes, last.txBytes), last.unavailable["txBytes"]),
    rxPackets: gauge(delta(f.rxPackets, last.rxPackets), last.unavailable["rxPackets"]),
    txPackets: gauge(delta(f.txPackets, last.txPackets), last.unavailable["txPackets"]),
    tcpByState: tcp,
  });
}
