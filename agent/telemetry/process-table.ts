/**
 * The processes of each container, kept between passes and keyed by identity (pid + start time),
 * so a pid recycled between two samples is a new process, never a continuation of the old one.
 *
 * A container's pids come from its cgroup's `cgroup.procs` (one read per container, instead of a
 * scan of every pid on the host). Whether anything in a container ran since the last look comes
 * from its cgroup CPU counter (nanoseconds): a process that did not run cannot have forked,
 * exec'd, exited, allocated or done I/O, so an idle container costs one read per pass. Passes
 * marked `full` read everything regardless (a safety net against anything that changes without
 * running, such as memory reclaim).
 */
import { closeSync, openSync, readdirSync, readSync } from "node:fs";
import { readProcFile } from "../runtime/proc-files.js";
import { containerIdFromCgroup, readProcessDetails, type ProcInfo } from "../runtime/container-processes.js";
import { CgroupSampler, parsePidList, type CgroupPaths } from "./cgroup-sampler.js";
import { ProcSampler, type DetailSample, type StatSample } from "./proc-sampler.js";

export interface TrackedProcess {
  key: string;
  info: ProcInfo;
  stat: StatSample;
  /** Counters from status, io and fd, as of the last time the process had run. */
  detail: DetailSample;
}


interface Entry {
  pid: number;
  paths: CgroupPaths | undefined;
  procs: Map<number, TrackedProcess>;
  /** Last CPU counter seen per consumer. */
  cpuSeen: Map<string, number>;
  /** The CPU counter file, kept open and re-read at offset 0 (one syscall per look). */
  cpuFd: number | undefined;
}

export interface ProcessTableStats {
  vanished: number;
  fallbackScans: number;
}

export class ProcessTable {
  private readonly entries = new Map<string, Entry>();
  private openCpuFds = 0;
  readonly proc: ProcSampler;
  readonly stats: ProcessTableStats = { vanished: 0, fallbackScans: 0 };

  constructor(
    private readonly procRoot: string,
    readonly cgroups: CgroupSampler,
  ) {
    this.proc = new ProcSampler(procRoot);
  }

  private entry(id: string, pid: number): Entry {
    let e = this.entries.get(id);
    if (e === undefined || e.pid !== pid) {
      if (e !== undefined) this.close(id, e);
      e = { pid, paths: pid > 0 ? this.cgroups.locate(id, pid) : undefined, procs: new Map(), cpuSeen: new Map(), cpuFd: undefined };
      this.entries.set(id, e);
    }
    return e;
  }

  paths(id: string, pid: number): CgroupPaths | undefined {
    return this.entry(id, pid).paths;
  }

  forget(id: string): void {
    const e = this.entries.get(id);
    if (e !== undefined) this.close(id, e);
    this.entries.delete(id);
  }

  private closeCpuFd(e: Entry): void {
    if (e.cpuFd === undefined) return;
    closeSync(e.cpuFd);
    e.cpuFd = undefined;
    this.openCpuFds--;
  }

  private close(id: string, e: Entry): void {
    this.closeCpuFd(e);
    this.cgroups.forget(id);
  }

  /** The container's CPU counter (ns), read through a kept-open descriptor. */
  private cpuNow(e: Entry): number | undefined {
    if (e.paths === undefined) return undefined;
    const file = cpuUsageFile(e.paths);
    if (file === undefined) return undefined;
    try {
      if (e.cpuFd === undefined && this.openCpuFds >= MAX_KEPT_OPEN) {
        // Past the bound, read it the usual way (open, read, close).
        const t = readProcFile(file);
        return t === undefined ? undefined : parseCpuUsage(t, file.endsWith("cpu.stat"));
      }
      if (e.cpuFd === undefined) {
        e.cpuFd = openSync(file, "r");
        this.openCpuFds++;
      }
      const n = readSync(e.cpuFd, cpuBuf, 0, cpuBuf.length, 0);
      return parseCpuUsage(cpuBuf.toString("latin1", 0, n), file.endsWith("cpu.stat"));
    } catch {
      // The cgroup went away (container stopped); look it up afresh next time.
      this.closeCpuFd(e);
      return undefined;
    }
  }

  /** Containers tracked, for cleanup by the caller. */
  ids(): string[] {
    return [...this.entries.keys()];
  }

  /**
   * True when the container's CPU counter moved since `consumer` last asked (or cannot be read),
   * i.e. something in it ran.
   */
  ranSince(id: string, pid: number, consumer: string): boolean {
    const e = this.entry(id, pid);
    const now = this.cpuNow(e);
    if (now === undefined) return true;
    const before = e.cpuSeen.get(consumer);
    e.cpuSeen.set(consumer, now);
    return before === undefined || before !== now;
  }

  /** The processes of the container as last refreshed (no reads). */
  current(id: string): TrackedProcess[] {
    return [...(this.entries.get(id)?.procs.values() ?? [])];
  }

  /**
   * Re-lists the container's processes and reads their stat; status/io/fd only for processes
   * that ran (or all when `full`).
   */
  refresh(id: string, pid: number, full: boolean): TrackedProcess[] {
    const e = this.entry(id, pid);
    const pids = this.listPids(id, e);
    const procs: TrackedProcess[] = [];
    for (const p of pids) {
      const stat = this.proc.stat(p);
      if (stat === undefined) {
        this.stats.vanished++;
        continue;
      }
      let t = e.procs.get(p);
      if (t !== undefined && t.stat.startTime !== stat.startTime) {
        // The pid was recycled: the old process exited, this is another one.
        t = undefined;
      }
      if (t === undefined || t.stat.comm !== stat.comm || t.stat.startStack !== stat.startStack) {
        // New, or it exec'd (another program, or the same name with other arguments): (re)read what it runs.
        const info = readProcessDetails(this.procRoot, p, stat);
        const detail = info === undefined ? undefined : this.proc.detail(p);
        if (info === undefined || detail === undefined) {
          this.stats.vanished++;
          continue;
        }
        t = { key: `${p}:${stat.startTime}`, info, stat, detail };
      } else {
        const ran = !sameStat(t.stat, stat);
        t.stat = stat;
        if (full || ran) {
          const d = this.proc.detail(p);
          if (d === undefined) {
            this.stats.vanished++;
            continue;
          }
          t.detail = d;
        }
      }
      procs.push(t);
    }
    e.procs = new Map(procs.map((t) => [t.info.pid, t]));
    return procs;
  }

  private listPids(id: string, e: Entry): number[] {
    const file = e.paths === undefined ? undefined : this.cgroups.procsFile(e.paths);
    if (file !== undefined) {
      const text = readProcFile(file);
      if (text !== undefined) return parsePidList(text);
    }
    // No cgroup file to read: find the container's pids by scanning /proc (slow, but correct).
    this.stats.fallbackScans++;
    const out: number[] = [];
    let names: string[];
    try {
      names = readdirSync(this.procRoot);
    } catch {
      return out;
    }
    const known = new Set([id]);
    for (const n of names) {
      const c = n.charCodeAt(0);
      if (c < 48 || c > 57) continue;
      const cg = readProcFile(`${this.procRoot}/${n}/cgroup`);
      if (cg !== undefined && containerIdFromCgroup(cg, known) === id) out.push(Number(n));
    }
    return out;
  }
}

function sameStat(a: StatSample, b: StatSample): boolean {
  return (
    a.cpuTicks === b.cpuTicks &&
    a.minflt === b.minflt &&
    a.majflt === b.majflt &&
    a.rssPages === b.rssPages &&
    a.threads === b.threads &&
    a.comm === b.comm &&
    a.state === b.state
  );
}

const cpuBuf = Buffer.allocUnsafe(4096);
/** CPU counter files kept open at most (one per container), well under any fd limit. */
const MAX_KEPT_OPEN = 256;

/** CPU time in ns from v1 cpuacct.usage text or v2 cpu.stat text. */
export function parseCpuUsage(text: string, v2: boolean): number | undefined {
  if (!v2) {
    const n = Number(text.trim());
    return text.trim() !== "" && Number.isFinite(n) ? n : undefined;
  }
  const m = /^usage_usec (\d+)/m.exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]) * 1000;
}

/** The file `cpuUsageNs` reads, for the benchmark baseline. */
export function cpuUsageFile(paths: CgroupPaths): string | undefined {
  const v1 = paths.dirs["cpuacct"];
  if (v1 !== undefined) return `${v1}/cpuacct.usage`;
  const v2 = paths.dirs[""];
  return v2 === undefined ? undefined : `${v2}/cpu.stat`;
}
