/**
 * Turns exec events (from eBPF, or from /proc polling) into per-layer exec counts and drift
 * detections. An eBPF event names the process's mount namespace; the container is the one whose
 * init process lives in that namespace, provided it had started when the exec happened: the kernel
 * reuses a freed namespace's inode number, so an event held back, or read late, from a namespace
 * that is gone can carry the number of a container started after it. Events from a namespace not
 * (yet) known are held for a short while: a container that has just started is known after the
 * collector's next graph.
 */
import { randomUUID } from "node:crypto";
import { posix } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { DetectionSchema, type Detection } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { parseStat, readProcFile, readProcLink } from "../runtime/proc-files.js";
import { readExe } from "../runtime/container-processes.js";
import type { Attribution } from "../layers/ldg-builder.js";
import type { LdgCollector, RunningContainer } from "../layers/ldg-collector.js";
import { bootMinusMonotonic, type BootOffset } from "./boot-clock.js";
import type { ExecEvent } from "./exec-ebpf.js";
import { CLOCK_TICKS_PER_SECOND } from "./proc-sampler.js";

export type ExecSourceKind = "ebpf" | "proc-poll";

export interface ExecSighting {
  container: RunningContainer;
  attribution: Attribution;
  path: string;
  pid: number;
  source: ExecSourceKind;
  /** eBPF only: the process's start time (clock ticks) and the exec's kernel time, to key the exit charging. */
  startTimeTicks?: bigint;
  monoNs?: bigint;
}

export interface ExecTrackerOptions {
  node: string;
  procRoot: string;
  collector: LdgCollector;
  /** Every exec mapped to a container and layer. */
  onExec: (s: ExecSighting) => void;
  onDetection: (d: Detection, s: ExecSighting) => void;
  /** How long an event from an unknown mount namespace waits for its container (ms). */
  holdMs?: number;
}

const MAX_PENDING = 20_000;
const SELF_EXE = /^\/proc\/(self|\d+)\/exe$/;
const NS_PER_TICK = 1_000_000_000n / BigInt(CLOCK_TICKS_PER_SECOND);

/** A running container's mount namespace, and when its init process started (CLOCK_BOOTTIME, ns; -1 unknown). */
interface NsOwner {
  id: string;
  startedNs: bigint;
}

export class ExecTracker {
  private mntns = new Map<number, NsOwner>();
  private boot: BootOffset | undefined;
  private pending: ExecEvent[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private lastRebuild = 0;
  /** Detections already reported, so one exec is reported once whatever saw it. */
  private readonly reported = new Set<string>();
  /** beforeStart: events from a namespace whose container started after the exec (not attributed). */
  readonly stats = { events: 0, matched: 0, unmatched: 0, beforeStart: 0, detections: 0 };

  constructor(private readonly o: ExecTrackerOptions) {}

  stop(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** Re-reads the mount namespace of every running container (after containers change). */
  rebuild(): void {
    const next = new Map<number, NsOwner>();
    for (const r of this.o.collector.running()) {
      const link = readProcLink(`${this.o.procRoot}/${r.pid}/ns/mnt`);
      const ino = link === undefined ? NaN : Number(link.slice(5, -1));
      if (!Number.isFinite(ino)) continue;
      const stat = parseStat(readProcFile(`${this.o.procRoot}/${r.pid}/stat`) ?? "");
      next.set(ino, { id: r.id, startedNs: stat === undefined ? -1n : stat.startTime * NS_PER_TICK });
    }
    this.mntns = next;
    // Re-measured each time: the two clocks drift apart whenever the host is suspended.
    this.boot = bootMinusMonotonic(this.o.procRoot);
    this.lastRebuild = Date.now();
    if (this.pending.length > 0) this.drainPending();
  }

  /** An exec event from eBPF. */
  onEbpf(ev: ExecEvent): void {
    this.stats.events++;
    if (!this.route(ev)) {
      if (Date.now() - this.lastRebuild > 200) {
        this.rebuild();
        if (this.route(ev)) return;
      }
      if (this.pending.length >= MAX_PENDING) {
        this.pending.shift();
        this.stats.unmatched++;
      }
      this.pending.push(ev);
      this.scheduleRetry();
    }
  }

  /** A process seen by polling for the first time (or re-exec'd), with its attribution. */
  onPolled(r: RunningContainer, pid: number, path: string, attribution: Attribution, startTime: bigint, ppid: number, comm: string): void {
    const s: ExecSighting = { container: r, attribution, path, pid, source: "proc-poll" };
    this.o.onExec(s);
    this.maybeDetect(s, { pid, ppid, startTimeTicks: startTime, comm, at: new Date() });
  }

  /** Reports an already running drift process once (for processes started before we watched). */
  reportExisting(r: RunningContainer, pid: number, path: string, attribution: Attribution, startTime: bigint, ppid: number, comm: string): void {
    this.maybeDetect({ container: r, attribution, path, pid, source: "proc-poll" }, { pid, ppid, startTimeTicks: startTime, comm, at: new Date() });
  }

  /**
   * The running container whose mount namespace `mntns` was at kernel time `monoNs` (fork and exit
   * events), by the same rule as exec events; undefined when not known (yet) or from before its start.
   */
  containerOf(mntns: number, monoNs: bigint): string | undefined {
    let owner = this.mntns.get(mntns);
    if (owner === undefined && Date.now() - this.lastRebuild > 200) {
      this.rebuild();
      owner = this.mntns.get(mntns);
    }
    if (owner === undefined || this.before({ monoNs }, owner)) return undefined;
    return owner.id;
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== undefined) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.rebuild();
      if (this.pending.length > 0) this.scheduleRetry();
    }, 250);
    this.retryTimer.unref();
  }

  private drainPending(): void {
    const hold = this.o.holdMs ?? 3000;
    const now = Date.now();
    const keep: ExecEvent[] = [];
    for (const ev of this.pending) {
      if (this.route(ev)) continue;
      if (now - ev.at.getTime() > hold) this.stats.unmatched++;
      else keep.push(ev);
    }
    this.pending = keep;
  }

  private route(ev: ExecEvent): boolean {
    const owner = this.mntns.get(ev.mntns);
    if (owner === undefined) return false;
    if (this.before(ev, owner)) {
      this.stats.beforeStart++;
      return true;
    }
    const r = this.o.collector.container(owner.id);
    if (r === undefined || r.pid <= 0) return false;
    this.stats.matched++;
    const proc = this.o.procRoot;
    let a: Attribution & { path: string };
    // While the process lives on in the image this exec loaded, its exe link is the file the
    // kernel ran (symlinks and /proc/self/exe re-execs resolved). Once it is gone, or has exec'd
    // again since, the exec'd path is what we have.
    const exe = this.stillRunning(ev);
    if (exe !== undefined) {
      a = { ...this.o.collector.attributeProcess(r, { exe: exe.path, exeDeleted: exe.deleted }), path: exe.path };
    } else {
      let path = ev.filename;
      if (SELF_EXE.test(path)) {
        // A re-exec of the caller's own binary: the parent (same binary before the exec) tells which.
        const parent = readExe(proc, ev.ppid);
        if (parent === undefined) return true;
        path = parent.path;
      } else if (!path.startsWith("/")) {
        const cwd = readProcLink(`${proc}/${ev.ppid}/cwd`);
        if (cwd === undefined) return true; // cannot place a relative path whose processes are gone
        path = posix.join(cwd, path);
      }
      a = this.o.collector.attributePath(r, path);
    }
    const s: ExecSighting = { container: r, attribution: a, path: a.path, pid: ev.pid, source: "ebpf", startTimeTicks: ev.startTimeTicks, monoNs: ev.monoNs };
    this.o.onExec(s);
    this.maybeDetect(s, { pid: ev.pid, ppid: ev.ppid, startTimeTicks: ev.startTimeTicks, comm: ev.comm, at: ev.at });
    return true;
  }

  /**
   * The exe link of the event's process, when that pid is still the same process (start time) and
   * has not exec'd another program since (command name): a recycled pid, or a dropped binary that
   * at once execs an image one, must not lend the event the later program's file.
   */
  private stillRunning(ev: ExecEvent): { path: string; deleted: boolean } | undefined {
    const exe = readExe(this.o.procRoot, ev.pid);
    if (exe === undefined) return undefined;
    // Read after the link, so that an exec in between shows here.
    const stat = parseStat(readProcFile(`${this.o.procRoot}/${ev.pid}/stat`) ?? "");
    return stat?.startTime === ev.startTimeTicks && stat.comm === ev.comm ? exe : undefined;
  }

  /**
   * The exec happened before the container's init process started (start times are cut to a
   * clock tick, so an exec within the tick of the start counts as after it).
   */
  private before(ev: { monoNs: bigint }, owner: NsOwner): boolean {
    const boot = this.boot;
    if (boot === undefined || owner.startedNs < 0n) return false;
    return ev.monoNs + boot.offsetNs + boot.errorNs < owner.startedNs;
  }

  private maybeDetect(s: ExecSighting, p: { pid: number; ppid: number; startTimeTicks: bigint; comm: string; at: Date }): void {
    if (!s.attribution.drift) return;
    const key = `${s.container.id}:${p.pid}:${p.startTimeTicks}:${s.path}`;
    if (this.reported.has(key)) return;
    this.reported.add(key);
    if (this.reported.size > 50_000) this.reported.delete(this.reported.values().next().value ?? "");
    this.stats.detections++;
    const d = create(DetectionSchema, {
      id: randomUUID(),
      node: this.o.node,
      containerId: s.container.id,
      containerName: s.container.name,
      layerId: s.attribution.layerId,
      rule: "drift",
      reason: s.attribution.reason,
      path: s.path,
      pid: p.pid,
      ppid: p.ppid,
      startTimeTicks: p.startTimeTicks,
      comm: p.comm,
      at: timestampFromDate(p.at),
      source: s.source,
    });
    this.o.onDetection(d, s);
  }
}
