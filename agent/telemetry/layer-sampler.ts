/**
 * One sampling pass: for each running container, first the processes that exited since the last
 * pass (kernel exit events) are charged what they did since their last sample; then its processes'
 * counters and gauges (re-read only when its cgroup CPU counter moved, or on a full pass), turned
 * into per-process deltas, attributed to the layer that provides each executable and summed per
 * layer into the window builder; then its cgroup and network namespace. New processes are reported
 * to the exec tracker when polling.
 *
 * I/O is each process's own: the kernel adds a reaped child's I/O totals to its parent's
 * /proc/<pid>/io, so what each exited child folded into its reaper is subtracted from the reaper's
 * figures, which are kept monotonic (a reaper read between its child's exit and the reap dips
 * below its last figure; that dip is not counted again when the reap lands). A reading is judged
 * one tick late, once the exit events of the children it may include have arrived.
 */
import { METRIC_INDEX, METRICS, type MetricName } from "../../models/features.js";
import type { Attribution } from "../layers/ldg-builder.js";
import type { LdgCollector, RunningContainer } from "../layers/ldg-collector.js";
import { readProcFile } from "../runtime/proc-files.js";
import type { ProcessExitEvent } from "./exec-ebpf.js";
import type { ExecTracker, ExecSourceKind } from "./exec-tracker.js";
import { setBounded, type ProcessLifecycle } from "./lifecycle.js";
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
const IS_COUNTER: readonly boolean[] = METRICS.map((m) => m.kind === "counter");
const COUNTERS: readonly number[] = METRICS.flatMap((m, i) => (m.kind === "counter" ? [i] : []));
const CTX_VOLUNTARY = METRIC_INDEX.ctx_switches_voluntary;
const CTX_INVOLUNTARY = METRIC_INDEX.ctx_switches_involuntary;
/** The I/O counters the kernel folds from a reaped child into its parent, in this order. */
const IO: readonly number[] = [METRIC_INDEX.read_bytes, METRIC_INDEX.write_bytes, METRIC_INDEX.disk_read_bytes, METRIC_INDEX.disk_write_bytes];
/** Metrics lost when a /proc file of a process cannot be read (DetailSample.missing). */
const MISSING: Readonly<Record<string, readonly number[]>> = {
  io: IO,
  status: [CTX_VOLUNTARY, CTX_INVOLUNTARY],
  fd: [METRIC_INDEX.open_fds],
};

/** A process's totals at exit, in METRICS order (gauges 0: it holds nothing any more). */
const EXIT_READ: Record<MetricName, (e: ProcessExitEvent) => number> = {
  cpu_seconds: (e) => e.cpuNs / 1e9,
  rss_bytes: () => 0,
  threads: () => 0,
  open_fds: () => 0,
  read_bytes: (e) => e.rchar,
  write_bytes: (e) => e.wchar,
  disk_read_bytes: (e) => e.readBytes,
  disk_write_bytes: (e) => e.writeBytes,
  ctx_switches_voluntary: (e) => e.nvcsw,
  ctx_switches_involuntary: (e) => e.nivcsw,
  minor_faults: (e) => e.minflt,
  major_faults: (e) => e.majflt,
};
const EXIT_READERS = METRICS.map((m) => EXIT_READ[m.name]);

/** How long a process that left /proc waits for its exit event, and a charged exit is remembered (ms). */
const GONE_TTL_MS = 10_000;
const MAX_GONE = 20_000;
const MAX_EXITED = 65_536;
/** How long a reaper's folded I/O is kept once its pid is no longer in the container (ms). */
const FOLD_TTL_MS = 30_000;
const MAX_FOLDS = 65_536;
/**
 * fd links read to find the owners of new sockets: per container per tick, and per pass over all
 * containers (host-network containers see every new socket of the host; readlink costs ~2 µs).
 */
const FD_LINKS_PER_CONTAINER = 4096;
const FD_LINKS_PER_PASS = 16_384;

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
  pid: number;
  comm: string;
  exe: string;
  /** Counters (own I/O) as last sampled, never decreasing; gauges as last read. */
  counters: MetricVector;
  /** The last /proc/<pid>/io reading (IO order), judged at the next tick (see `ownIo`). */
  pendingIo: Float64Array;
  cpuTicks: number;
  attribution: Attribution;
  /** /proc files that could not be read at the last detail read (DetailSample.missing). */
  missing: readonly string[];
  /** When it left /proc (ms), while it waits in `gone` for its exit event. */
  goneAt: number;
}

/** I/O an exited child folded into its reaper (IO order), and when it last grew (ms). */
interface Fold {
  v: Float64Array;
  at: number;
}

interface ContainerMemory {
  procs: Map<string, ProcMemory>;
  /** Processes that left /proc before their exit event was charged (by identity). */
  gone: Map<string, ProcMemory>;
  /** Identities charged at exit, and when (ms): a zombie, or a late view in /proc, is not sampled again. */
  exited: Map<string, number>;
  /** By reaper pid: what its exited children folded into its /proc/<pid>/io. */
  folded: Map<number, Fold>;
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
  /** Kernel fork/exec/exit records (eBPF); without it nothing is charged at exit. */
  lifecycle?: ProcessLifecycle;
  now?: () => number;
}

/** Exit charging's own counts. */
export interface ExitStats {
  /** Exits charged to a layer. */
  charged: number;
  /** Exits whose layer could not be found (no exec, fork or sample of it or its parents). */
  unattributed: number;
  /** Exit events for an identity already charged. */
  duplicates: number;
}

export class LayerSampler {
  private readonly scratch = emptyMetrics();
  private readonly delta = emptyMetrics();
  private readonly net: NetSampler;
  private readonly memory = new Map<string, ContainerMemory>();
  private readonly now: () => number;
  private passNo = 0;
  /** fd links still allowed in this pass. */
  private linkBudget = FD_LINKS_PER_PASS;
  readonly exitStats: ExitStats = { charged: 0, unattributed: 0, duplicates: 0 };

  constructor(private readonly o: LayerSamplerOptions) {
    this.net = new NetSampler({ procRoot: o.procRoot });
    this.now = o.now ?? Date.now;
  }

  /** Samples every running container once (`forceFull`: read every file, as a full pass does). */
  pass(running: readonly RunningContainer[], forceFull: boolean): void {
    const full = forceFull || this.passNo % this.o.passesPerFull === 0;
    this.passNo++;
    this.linkBudget = FD_LINKS_PER_PASS;
    const uptime = readUptimeTicks(this.o.procRoot);
    const exits = this.o.lifecycle?.drain();
    for (const r of running) this.sampleContainer(r, full, uptime, exits?.get(r.id) ?? []);
  }

  /** Forgets a container that stopped (a restart is a first look again). */
  forget(id: string): void {
    this.memory.delete(id);
  }

  private memoryOf(id: string): ContainerMemory {
    let m = this.memory.get(id);
    if (m === undefined) {
      m = { procs: new Map(), gone: new Map(), exited: new Map(), folded: new Map(), lastUptime: 0, first: true, knownSockets: undefined };
      this.memory.set(id, m);
    }
    return m;
  }

  private sampleContainer(r: RunningContainer, full: boolean, uptime: number | undefined, exits: readonly ProcessExitEvent[]): void {
    const table = this.o.processes;
    const windows = this.o.windows;
    const st = this.memoryOf(r.id);
    const ran = table.ranSince(r.id, r.pid, "telemetry");
    const totals = new Map<string, LayerTick>();
    const add = (layerId: string, v: MetricVector, processes: number) => {
      let t = totals.get(layerId);
      if (t === undefined) totals.set(layerId, (t = { v: emptyMetrics(), n: 0 }));
      for (let i = 0; i < METRIC_COUNT; i++) t.v[i] = (t.v[i] ?? 0) + (v[i] ?? 0);
      t.n += processes;
    };
    const polling = this.o.execSource.kind === "proc-poll";
    const now = this.now();

    // Exits before the first look belong to no window of ours (the first look is a baseline).
    if (!st.first && exits.length > 0) this.chargeExits(r, st, exits, add, now);

    if (ran || full || st.first || exits.length > 0) {
      const procs = table.refresh(r.id, r.pid, full);
      const next = new Map<string, ProcMemory>();
      const active: TrackedProcess[] = [];
      const live: TrackedProcess[] = [];
      for (const t of procs) {
        // A zombie, or a process seen again after its exit was charged.
        if (st.exited.has(t.key)) continue;
        live.push(t);
        const counters = countersOf(t, this.scratch);
        const prev = st.procs.get(t.key);
        // Started since the last look: everything it did happened in this window.
        const startedSince = prev === undefined && !st.first && Number(t.stat.startTime) >= st.lastUptime;
        const raw = Float64Array.from(IO, (m) => counters[m] ?? 0);
        this.ownIo(counters, raw, prev, startedSince, st.folded.get(t.info.pid));
        let mem: ProcMemory;
        const delta = this.delta;
        delta.fill(0);
        if (prev === undefined || prev.comm !== t.stat.comm || prev.exe !== t.info.exe) {
          const attribution = this.o.collector.attributeProcess(r, t.info);
          mem = { pid: t.info.pid, comm: t.stat.comm, exe: t.info.exe, counters: Float64Array.from(counters), pendingIo: raw, cpuTicks: t.stat.cpuTicks, attribution, missing: t.detail.missing, goneAt: 0 };
          const w = windows.layer(r.id, attribution.layerId);
          if (prev === undefined) {
            for (const l of this.o.collector.libraryLayers(r, table.proc.mappedFiles(t.info.pid, t.info.exe))) if (l !== attribution.layerId) w.libraryLayers.add(l);
            if (startedSince) {
              w.counts.process_starts++;
              delta.set(counters);
            }
            if (st.first) this.o.tracker.reportExisting(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
            else if (polling) this.o.tracker.onPolled(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
          } else {
            // Re-exec'd: counters carry on, the layer may change.
            deltaOf(counters, prev.counters, delta);
            for (const i of COUNTERS) mem.counters[i] = Math.max(prev.counters[i] ?? 0, counters[i] ?? 0);
            if (polling) this.o.tracker.onPolled(r, t.info.pid, t.info.exe, attribution, t.stat.startTime, t.stat.ppid, t.stat.comm);
          }
          active.push(t);
        } else {
          mem = prev;
          deltaOf(counters, prev.counters, delta);
          if (t.stat.cpuTicks !== prev.cpuTicks || counters[CTX_VOLUNTARY] !== prev.counters[CTX_VOLUNTARY] || counters[CTX_INVOLUNTARY] !== prev.counters[CTX_INVOLUNTARY]) active.push(t);
          // Own counters never go back: a reaper's dip before a reap is not counted twice.
          for (let i = 0; i < METRIC_COUNT; i++) mem.counters[i] = IS_COUNTER[i] ? Math.max(prev.counters[i] ?? 0, counters[i] ?? 0) : (counters[i] ?? 0);
          mem.cpuTicks = t.stat.cpuTicks;
          mem.missing = t.detail.missing;
          mem.pendingIo = raw;
        }
        for (const g of GAUGES) delta[g] = counters[g] ?? 0;
        next.set(t.key, mem);
        this.markMissing(r.id, mem);
        add(mem.attribution.layerId, delta, 1);
      }
      // Those that left /proc wait a while for their exit event, which charges what they did since.
      for (const [key, mem] of st.procs) {
        if (next.has(key) || st.exited.has(key)) continue;
        mem.goneAt = now;
        setBounded(st.gone, key, mem, MAX_GONE);
      }
      st.procs = next;
      this.expire(st, now, live);
      this.sampleCgroup(r);
      this.sampleNet(r, st, active, live);
    } else {
      // Nothing in the container ran: counters did not move, gauges are as last read.
      const v = this.delta;
      for (const mem of st.procs.values()) {
        v.fill(0);
        for (const g of GAUGES) v[g] = mem.counters[g] ?? 0;
        this.markMissing(r.id, mem);
        add(mem.attribution.layerId, v, 1);
      }
    }
    windows.addTick(r.id, totals);
    // An unreadable uptime keeps the last one: processes are then judged against an earlier tick.
    if (uptime !== undefined) st.lastUptime = uptime;
    st.first = false;
  }

  /**
   * Sets the I/O counters in `counters` to the process's own I/O, one reading late: the previous
   * tick's reading (`prev.pendingIo`) less what its exited children folded into it, as known now.
   * A child's exit event can reach the agent after its parent's /proc/<pid>/io already shows the
   * reap (the parent can reap before the child's last context switch, and events cross a pipe):
   * judged at once, that reading would count the child's I/O on the parent too. A process first
   * seen has no earlier reading: a baseline (its own I/O so far) or, if it started since the last
   * tick, 0 (its whole I/O is counted at the next tick or at its exit).
   */
  private ownIo(counters: MetricVector, raw: Float64Array, prev: ProcMemory | undefined, startedSince: boolean, fold: Fold | undefined): void {
    const from = prev?.pendingIo ?? (startedSince ? undefined : raw);
    IO.forEach((m, k) => (counters[m] = from === undefined ? 0 : Math.max(0, (from[k] ?? 0) - (fold?.v[k] ?? 0))));
  }

  /**
   * Charges each exited process, in the current window, with its totals at exit less what was
   * already sampled of it (all of them if it never was, and it counts as a start), to the layer of
   * the executable it ran at exit: its exec's, else its last sample's, else (forked without exec)
   * its parent's at fork time. Its I/O is its own: what its reaped children folded into it is taken
   * off, and its own totals are recorded as folded into its reaper.
   */
  private chargeExits(r: RunningContainer, st: ContainerMemory, exits: readonly ProcessExitEvent[], add: (layerId: string, v: MetricVector, processes: number) => void, now: number): void {
    const lifecycle = this.o.lifecycle;
    if (lifecycle === undefined) return;
    let byPid: Map<number, ProcMemory> | undefined;
    const sampledLayer = (pid: number): string | undefined => {
      if (byPid === undefined) {
        byPid = new Map();
        for (const m of st.gone.values()) byPid.set(m.pid, m);
        for (const m of st.procs.values()) byPid.set(m.pid, m);
      }
      return byPid.get(pid)?.attribution.layerId;
    };
    const total = emptyMetrics();
    for (const ex of exits) {
      const key = `${ex.pid}:${ex.startTimeTicks}`;
      if (st.exited.has(key)) {
        this.exitStats.duplicates++;
        continue;
      }
      setBounded(st.exited, key, now, MAX_EXITED);
      for (let i = 0; i < METRIC_COUNT; i++) total[i] = EXIT_READERS[i]?.(ex) ?? 0;
      // Its reaper's /proc/<pid>/io will include all of it (its reaped descendants' too).
      if (ex.ppid > 0) {
        let f = st.folded.get(ex.ppid);
        if (f === undefined) setBounded(st.folded, ex.ppid, (f = { v: new Float64Array(IO.length), at: now }), MAX_FOLDS);
        IO.forEach((m, k) => (f.v[k] = (f.v[k] ?? 0) + (total[m] ?? 0)));
        f.at = now;
      }
      const fold = st.folded.get(ex.pid);
      if (fold !== undefined) {
        IO.forEach((m, k) => (total[m] = Math.max(0, (total[m] ?? 0) - (fold.v[k] ?? 0))));
        st.folded.delete(ex.pid);
      }
      const mem = st.procs.get(key) ?? st.gone.get(key);
      st.procs.delete(key);
      st.gone.delete(key);
      const rec = lifecycle.execOf(ex.pid, ex.startTimeTicks);
      const layerId = (rec?.containerId === r.id ? rec.layerId : undefined) ?? mem?.attribution.layerId ?? lifecycle.inheritedLayer(r.id, ex.pid, sampledLayer);
      if (layerId === undefined) {
        this.exitStats.unattributed++;
        continue;
      }
      if (mem !== undefined) {
        for (const i of COUNTERS) total[i] = Math.max(0, (total[i] ?? 0) - (mem.counters[i] ?? 0));
      } else {
        this.o.windows.layer(r.id, layerId).counts.process_starts++;
      }
      add(layerId, total, 0);
      this.o.windows.exitCharged(r.id);
      this.exitStats.charged++;
    }
  }

  /** Drops what is past its time: gone processes never charged, charged identities, folds of reapers that left. */
  private expire(st: ContainerMemory, now: number, live: readonly TrackedProcess[]): void {
    for (const [key, mem] of st.gone) {
      if (now - mem.goneAt < GONE_TTL_MS) break;
      st.gone.delete(key);
    }
    for (const [key, at] of st.exited) {
      if (now - at < GONE_TTL_MS) break;
      st.exited.delete(key);
    }
    if (st.folded.size === 0) return;
    const pids = new Set(live.map((t) => t.info.pid));
    for (const [pid, f] of st.folded) if (!pids.has(pid) && now - f.at >= FOLD_TTL_MS) st.folded.delete(pid);
  }

  private markMissing(containerId: string, mem: ProcMemory): void {
    if (mem.missing.length === 0) return;
    const w = this.o.windows.layer(containerId, mem.attribution.layerId);
    for (const file of mem.missing) for (const m of MISSING[file] ?? []) w.metricUnavailable(m);
  }

  private sampleCgroup(r: RunningContainer): void {
    const paths = this.o.processes.paths(r.id, r.pid);
    if (paths === undefined) return;
    this.o.windows.addCgroup(r.id, this.o.processes.cgroups.sample(paths), paths.version);
  }

  /**
   * New TCP sockets of the container's network namespace (the host's, for a host-network
   * container), each counted once on the layer of the process holding it: a listening socket as
   * `listen_sockets`, any other (opened, or accepted) as `new_connections`. The processes that ran
   * are looked at first, then the others, within a budget of fd links per container and per pass.
   */
  private sampleNet(r: RunningContainer, st: ContainerMemory, active: readonly TrackedProcess[], live: readonly TrackedProcess[]): void {
    const windows = this.o.windows;
    const s = this.net.sample(r.pid, this.passNo);
    if (s === undefined) return;
    if (s.unavailable["tcp"] !== undefined) {
      windows.countUnavailable(r.id, "new_connections");
      windows.countUnavailable(r.id, "listen_sockets");
    }
    const firstLook = st.knownSockets === undefined;
    windows.addNet(r.id, s);
    const fresh: number[] = [];
    for (const inode of s.tcpSockets.keys()) if (!st.knownSockets?.has(inode)) fresh.push(inode);
    st.knownSockets = new Set(s.tcpSockets.keys());
    if (firstLook || fresh.length === 0 || live.length === 0) return;
    // Owners: fd -> socket:[inode].
    const want = new Set(fresh);
    const cost = { links: 0 };
    const budget = Math.min(FD_LINKS_PER_CONTAINER, this.linkBudget);
    const seen = new Set<string>();
    let scanned = 0;
    for (const t of [...active, ...live]) {
      if (want.size === 0 || cost.links >= budget) break;
      if (seen.has(t.key)) continue;
      seen.add(t.key);
      scanned++;
      const mem = st.procs.get(t.key);
      for (const inode of this.o.processes.proc.socketInodes(t.info.pid, want, budget - cost.links, cost)) {
        want.delete(inode);
        if (mem === undefined) continue;
        const counts = windows.layer(r.id, mem.attribution.layerId).counts;
        if (s.tcpSockets.get(inode)?.state === "LISTEN") counts.listen_sockets++;
        else counts.new_connections++;
      }
    }
    this.linkBudget -= cost.links;
    // Out of budget with processes left unread: the counts may be short.
    if (want.size > 0 && scanned < live.length) {
      windows.countUnavailable(r.id, "new_connections");
      windows.countUnavailable(r.id, "listen_sockets");
    }
  }
}
