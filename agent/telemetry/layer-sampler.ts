/**
 * One sampling pass: for each running container, its processes' counters and gauges (re-read only
 * when its cgroup CPU counter moved, or on a full pass), turned into per-process deltas, attributed
 * to the layer that provides each executable and summed per layer into the window builder; then
 * its cgroup and network namespace. New processes are reported to the exec tracker when polling.
 */
import { METRIC_INDEX, METRICS, type MetricName } from "../../models/features.js";
import type { Attribution } from "../layers/ldg-builder.js";
import type { LdgCollector, RunningContainer } from "../layers/ldg-collector.js";
import { readProcFile } from "../runtime/proc-files.js";
import type { ExecTracker, ExecSourceKind } from "./exec-tracker.js";
import { emptyMetrics, METRIC_COUNT, type MetricVector } from "./layer-window.js";
import { NetSampler } from "./net-sampler.js";
import { CLOCK_TICKS_PER_SECOND, PAGE_SIZE } from "./proc-sampler.js";
import type { ProcessTable, TrackedProcess } from "./process-table.js";
import type { LayerTick, WindowBuilder } from "./window-builder.js";

/** Where each metric of models/features.ts is read from (the compiler checks that none is missing). */
const READ: Record<MetricName, (t: TrackedProcess) => number> = {
  cpu_seconds: (t) => t.stat.cpuTicks / CLOCK_TICKS_PER_SECOND,
  rss_bytes: (t) => t.stat.rssPages * PAGE_SIZE,
  threads: (t) => t.stat.threads,
  open_fds: (t) => t.detail.fds,
  read_bytes: (t) => t.detail.rchar,
  write_bytes: (t) => t.detail.wchar,
  disk_read_bytes: (t) => t.detail.readBytes,
  disk_write_bytes: (t) => t.detail.writeBytes,
  ctx_switches_voluntary: (t) => t.detail.ctxVoluntary,
  ctx_switches_involuntary: (t) => t.detail.ctxInvoluntary,
  minor_faults: (t) => t.stat.minflt,
  major_faults: (t) => t.stat.majflt,
};
const READERS = METRICS.map((m) => READ[m.name]);
const GAUGES: readonly number[] = METRICS.flatMap((m, i) => (m.kind === "gauge" ? [i] : []));
const CTX_VOLUNTARY = METRIC_INDEX.ctx_switches_voluntary;
const CTX_INVOLUNTARY = METRIC_INDEX.ctx_switches_involuntary;

function countersOf(t: TrackedProcess, v: MetricVector): MetricVector {
  for (let i = 0; i < METRIC_COUNT; i++) v[i] = READERS[i]?.(t) ?? 0;
  return v;
}

/**
 * /proc/uptime in clock ticks (the unit of a process's start time); undefined when it cannot be
 * read, so that no tick's "started since" is measured against a made-up 0 (which would count every
 * new process's whole lifetime as this window's).
 */
function readUptimeTicks(procRoot: string): number | undefined {
  const t = readProcFile(`${procRoot}/uptime`);
  const s = t === undefined ? NaN : Number(t.slice(0, t.indexOf(" ")));
  return Number.isFinite(s) ? Math.floor(s * CLOCK_TICKS_PER_SECOND) : undefined;
}

/** What a process did since its counters were last sampled (gauges are set apart by the caller). */
function deltaOf(counters: Float64Array, prev: Float64Array, out: Float64Array): void {
  for (let i = 0; i < METRIC_COUNT; i++) out[i] = Math.max(0, (counters[i] ?? 0) - (prev[i] ?? 0));
}

/** What the sampler remembers of a process between ticks (its counters as last sampled). */
interface ProcMemory {
  comm: string;
  exe: string;
  counters: MetricVector;
  cpuTicks: number;
  attribution: Attribution;
}

interface ContainerMemory {
  procs: Map<string, ProcMemory>;
  /** Uptime (clock ticks) at the last sample: processes started after it are wholly new. */
  lastUptime: number;
  first: boolean;
  /** TCP sockets at the last look, undefined before the first. */
  knownSockets: Set<number> | undefined;
}

export interface LayerSamplerOptions {
  procRoot: string;
  collector: LdgCollector;
  processes: ProcessTable;
  tracker: ExecTracker;
  /** The active exec source: under polling, new processes are the exec events. */
  execSource: { readonly kind: ExecSourceKind };
  windows: WindowBuilder;
  /** Every how many passes every file of every process is read regardless of activity. */
  passesPerFull: number;
}

export class LayerSampler {
  private readonly scratch = emptyMetrics();
  private readonly delta = emptyMetrics();
  private readonly net: NetSampler;
  private readonly memory = new Map<string, ContainerMemory>();
  private passNo = 0;

  constructor(private readonly o: LayerSamplerOptions) {
    this.net = new NetSampler({ procRoot: o.procRoot });
  }

  /** Samples every running container once (`forceFull`: read every file, as a full pass does). */
  pass(running: readonly RunningContainer[], forceFull: boolean): void {
    const full = forceFull || this.passNo % this.o.passesPerFull === 0;
    this.passNo++;
    const uptime = readUptimeTicks(this.o.procRoot);
    for (const r of running) this.sampleContainer(r, full, uptime);
  }

  /** Forgets a container that stopped (a restart is a first look again). */
  forget(id: string): void {
    this.memory.delete(id);
  }

  private memoryOf(id: string): ContainerMemory {
    let m = this.memory.get(id);
    if (m === undefined) {
      m = { procs: new Map(), lastUptime: 0, first: true, knownSockets: undefined };
      this.memory.set(id, m);
    }
    return m;
  }

  private sampleContainer(r: RunningContainer, full: boolean, uptime: number | undefined): void {
    const table = this.o.processes;
    const windows = this.o.windows;
    const st = this.memoryOf(r.id);
    const ran = table.ranSince(r.id, r.pid, "telemetry");
    const totals = new Map<string, LayerTick>();
    const add = (layerId: string, v: MetricVector) => {
      let t = totals.get(layerId);
      if (t === undefined) totals.set(layerId, (t = { v: emptyMetrics(), n: 0 }));
      for (let i = 0; i < METRIC_COUNT; i++) t.v[i] = (t.v[i] ?? 0) + (v[i] ?? 0);
      t.n++;
    };
    const polling = this.o.execSource.kind === "proc-poll";

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
          const w = windows.layer(r.id, attribution.layerId);
          if (prev === undefined) {
            for (const l of this.o.collector.libraryLayers(r, table.proc.mappedFiles(t.info.pid, t.info.exe))) if (l !== attribution.layerId) w.libraryLayers.add(l);
            // Started since the last look: everything it did happened in this window.
            const startedSince = !st.first && Number(t.stat.startTime) >= st.lastUptime;
            if (startedSince) {
              w.counts.process_starts++;
              delta.set(counters);
            }
            if (st.first) this.o.tracker.reportExisting(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
            else if (polling) this.o.tracker.onPolled(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
          } else {
            // Re-exec'd: counters carry on, the layer may change.
            deltaOf(counters, prev.counters, delta);
            if (polling) this.o.tracker.onPolled(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
          }
          active.push(t);
        } else {
          mem = prev;
          deltaOf(counters, prev.counters, delta);
          if (t.stat.cpuTicks !== prev.cpuTicks || counters[CTX_VOLUNTARY] !== prev.counters[CTX_VOLUNTARY] || counters[CTX_INVOLUNTARY] !== prev.counters[CTX_INVOLUNTARY]) active.push(t);
          mem.counters.set(counters);
          mem.cpuTicks = t.stat.cpuTicks;
        }
        for (const g of GAUGES) delta[g] = counters[g] ?? 0;
        next.set(t.key, mem);
        add(mem.attribution.layerId, delta);
      }
      st.procs = next;
      this.sampleCgroup(r);
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
    windows.addTick(r.id, totals);
    // An unreadable uptime keeps the last one: processes are then judged against an earlier tick.
    if (uptime !== undefined) st.lastUptime = uptime;
    st.first = false;
  }

  private sampleCgroup(r: RunningContainer): void {
    const paths = this.o.processes.paths(r.id, r.pid);
    if (paths === undefined) return;
    this.o.windows.addCgroup(r.id, this.o.processes.cgroups.sample(paths), paths.version);
  }

  private sampleNet(r: RunningContainer, st: ContainerMemory, active: readonly TrackedProcess[]): void {
    const s = this.net.sample(r.pid, this.passNo);
    if (s === undefined) return;
    const firstLook = st.knownSockets === undefined;
    this.o.windows.addNet(r.id, s);
    const fresh: number[] = [];
    for (const inode of s.tcpSockets.keys()) if (!st.knownSockets?.has(inode)) fresh.push(inode);
    st.knownSockets = new Set(s.tcpSockets.keys());
    if (firstLook || fresh.length === 0 || active.length === 0) return;
    // New sockets: find which of the processes that ran own them (fd -> socket:[inode]).
    const want = new Set(fresh);
    for (const t of active) {
      for (const inode of this.o.processes.proc.socketInodes(t.info.pid, want)) {
        want.delete(inode);
        const mem = st.procs.get(t.key);
        if (mem !== undefined) this.o.windows.layer(r.id, mem.attribution.layerId).counts.new_connections++;
      }
      if (want.size === 0) break;
    }
  }
}
