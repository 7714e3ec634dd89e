/**
 * Per-process readers for the telemetry samplers. One read of /proc/<pid>/stat gives CPU, faults,
 * threads, RSS and the start time; /proc/<pid>/status (context switches), /proc/<pid>/io and the
 * fd directory are read only when the process changed since its last sample (or on a full pass),
 * because reading them costs more than all the parsing put together.
 */
import { opendirSync, statSync, type Dir } from "node:fs";
import { readProcFile, readProcLink } from "../runtime/proc-files.js";

/** USER_HZ: the unit of utime, stime and starttime in /proc/<pid>/stat (100 on every Linux ABI). */
export const CLOCK_TICKS_PER_SECOND = 100;
export const PAGE_SIZE = 4096;

export interface StatSample {
  comm: string;
  state: string;
  ppid: number;
  minflt: number;
  majflt: number;
  /** utime + stime, clock ticks. */
  cpuTicks: number;
  threads: number;
  /** Start time in clock ticks after boot: with the pid, the identity of a process. */
  startTime: bigint;
  rssPages: number;
  /**
   * Field 28, the bottom of the process's stack: every exec maps a new one (placed at random, and
   * below argv and the environment), so a change tells an exec that kept the command name. 0 when
   * the reader may not see it.
   */
  startStack: number;
}

export interface DetailSample {
  ctxVoluntary: number;
  ctxInvoluntary: number;
  rchar: number;
  wchar: number;
  readBytes: number;
  writeBytes: number;
  fds: number;
  /** Files that could not be read (io needs the same user or root): those metrics stay at 0. */
  missing: string[];
}

/**
 * Parses the counters of /proc/<pid>/stat. comm may hold spaces and ')', so fields are counted
 * from the last ')'. Field N (1-based) is rest[N - 3].
 */
export function parseStatSample(text: string): StatSample | undefined {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  // Scan the space-separated fields after ") " once, keeping the numeric ones we need
  // (cheaper than split: this runs for every process on every pass).
  const want = STAT_FIELDS;
  const vals = new Array<number>(want.length).fill(-1);
  let state = "?";
  let field = 0;
  let w = 0;
  let i = close + 2;
  const n = text.length;
  while (i < n && w < want.length) {
    if (field === 0) {
      state = text[i] ?? "?";
      while (i < n && text.charCodeAt(i) !== 32) i++;
    } else if (field === want[w]) {
      let v = 0;
      let digits = 0;
      for (;;) {
        const c = text.charCodeAt(i);
        if (c < 48 || c > 57) break;
        v = v * 10 + (c - 48);
        digits++;
        i++;
      }
      const c = i < n ? text.charCodeAt(i) : 32;
      if (digits === 0 || (c !== 32 && c !== 10)) return undefined;
      vals[w++] = v;
    } else {
      while (i < n && text.charCodeAt(i) !== 32) i++;
    }
    i++; // the space
    field++;
  }
  // startstack, the last field read, is there on every kernel the agent runs on; a shorter line is
  // still read for the rest.
  if (w < want.length - 1) return undefined;
  const [ppid, minflt, majflt, utime, stime, threads, start, rss, startStack] = vals as [number, number, number, number, number, number, number, number, number];
  return {
    comm: text.slice(open + 1, close),
    state,
    ppid,
    minflt,
    majflt,
    cpuTicks: utime + stime,
    threads,
    startTime: BigInt(start),
    rssPages: rss,
    startStack: Math.max(0, startStack),
  };
}

/** Fields after the comm (0 = state): ppid, minflt, majflt, utime, stime, num_threads, starttime, rss, startstack. */
const STAT_FIELDS = [1, 7, 9, 11, 12, 17, 19, 21, 25];

/** The number after `key` (which includes its ':') up to the end of the line, or -1. */
function field(text: string, key: string): number {
  const i = text.indexOf(key);
  if (i < 0) return -1;
  let j = i + key.length;
  while (text.charCodeAt(j) === 32 || text.charCodeAt(j) === 9) j++;
  let n = 0;
  let digits = 0;
  for (;;) {
    const c = text.charCodeAt(j++);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
    digits++;
  }
  return digits > 0 ? n : -1;
}

export function parseStatusCtx(text: string): { voluntary: number; involuntary: number } | undefined {
  const voluntary = field(text, "\nvoluntary_ctxt_switches:");
  const involuntary = field(text, "\nnonvoluntary_ctxt_switches:");
  if (voluntary < 0 || involuntary < 0) return undefined;
  return { voluntary, involuntary };
}

export function parseIo(text: string): { rchar: number; wchar: number; readBytes: number; writeBytes: number } | undefined {
  const rchar = field(text, "rchar:");
  const wchar = field(text, "\nwchar:");
  const readBytes = field(text, "\nread_bytes:");
  const writeBytes = field(text, "\nwrite_bytes:");
  if (rchar < 0 || wchar < 0 || readBytes < 0 || writeBytes < 0) return undefined;
  return { rchar, wchar, readBytes, writeBytes };
}

/**
 * Linux 6.2+ reports the number of open fds as the size of /proc/<pid>/fd: one stat instead of
 * listing the directory. Checked once against our own fd table.
 */
let fdSizeWorks: boolean | undefined;

/**
 * Entries of a process's fd directory looked at per question: a container's process may hold a
 * million fds, and listing them all each second grew the agent by the size of that list.
 */
const MAX_FDS_SCANNED = 8192;

/** Calls `visit` with each name in `dir`, at most `max` of them, until it answers false; false if `dir` cannot be opened. */
function eachFd(dir: string, visit: (name: string) => boolean, max = MAX_FDS_SCANNED): boolean {
  let d: Dir;
  try {
    d = opendirSync(dir, { bufferSize: 128 });
  } catch {
    return false;
  }
  try {
    for (let i = 0; i < max; i++) {
      const e = d.readSync();
      if (e === null || !visit(e.name)) break;
    }
  } catch {
    // The process exited while its fds were read: what was seen stands.
  } finally {
    d.closeSync();
  }
  return true;
}

function countFds(dir: string): number {
  if (fdSizeWorks === undefined) {
    try {
      fdSizeWorks = statSync("/proc/self/fd").size > 0;
    } catch {
      fdSizeWorks = false;
    }
  }
  try {
    if (fdSizeWorks) {
      const st = statSync(dir, { throwIfNoEntry: false });
      return st === undefined ? -1 : st.size;
    }
    // Older kernels: counted up to the scan cap.
    let n = 0;
    return eachFd(dir, () => ++n > 0) ? n : -1;
  } catch {
    return -1;
  }
}

export class ProcSampler {
  constructor(private readonly procRoot = "/proc") {}

  /** undefined when the process is gone (ENOENT/ESRCH) or the text is not a stat line. */
  stat(pid: number): StatSample | undefined {
    const t = readProcFile(`${this.procRoot}/${pid}/stat`);
    return t === undefined ? undefined : parseStatSample(t);
  }

  /** undefined when the process vanished while being read. */
  detail(pid: number): DetailSample | undefined {
    const base = `${this.procRoot}/${pid}`;
    const missing: string[] = [];
    const status = readProcFile(`${base}/status`);
    if (status === undefined) return undefined;
    const ctx = parseStatusCtx(status);
    if (ctx === undefined) missing.push("status");
    const ioText = readProcFile(`${base}/io`);
    const io = ioText === undefined ? undefined : parseIo(ioText);
    if (io === undefined) missing.push("io");
    const fds = countFds(`${base}/fd`);
    if (fds < 0) missing.push("fd");
    return {
      ctxVoluntary: ctx?.voluntary ?? 0,
      ctxInvoluntary: ctx?.involuntary ?? 0,
      rchar: io?.rchar ?? 0,
      wchar: io?.wchar ?? 0,
      readBytes: io?.readBytes ?? 0,
      writeBytes: io?.writeBytes ?? 0,
      fds: Math.max(0, fds),
      missing,
    };
  }

  /**
   * Which of the socket inodes in `want` a process holds (its `socket:[N]` fd links); empty if it
   * vanished. Stops once all are found, and after `maxFds` fds (8,192 unless a test says less);
   * `cost.links` counts the links read, for a caller's budget.
   */
  socketInodes(pid: number, want: ReadonlySet<number>, maxFds = MAX_FDS_SCANNED, cost?: { links: number }): number[] {
    const dir = `${this.procRoot}/${pid}/fd`;
    const out: number[] = [];
    eachFd(dir, (name) => {
      if (cost !== undefined) cost.links++;
      const l = readProcLink(`${dir}/${name}`);
      if (l !== undefined && l.startsWith("socket:[")) {
        const inode = Number(l.slice(8, -1));
        if (want.has(inode)) out.push(inode);
      }
      return out.length < want.size;
    }, maxFds);
    return out;
  }

  /** Paths of the files mapped by a process other than its executable (shared libraries). */
  mappedFiles(pid: number, exe: string): string[] {
    const text = readProcFile(`${this.procRoot}/${pid}/maps`);
    if (text === undefined) return [];
    const out = new Set<string>();
    for (const line of text.split("\n")) {
      // addr perms offset dev inode pathname
      const slash = line.indexOf(" /");
      if (slash < 0) continue;
      const path = line.slice(slash + 1).trim();
      if (path === exe || path.endsWith(" (deleted)")) continue;
      out.add(path);
    }
    return [...out];
  }

  /** Every file a full sample of `pid` reads, for the benchmark's read-only baseline. */
  files(pid: number): string[] {
    const base = `${this.procRoot}/${pid}`;
    return [`${base}/stat`, `${base}/status`, `${base}/io`];
  }

  fdDir(pid: number): string {
    return `${this.procRoot}/${pid}/fd`;
  }

  /** How the fd count is taken here (for the benchmark baseline to do the same). */
  static fdCountByStat(): boolean {
    countFds("/proc/self/fd");
    return fdSizeWorks === true;
  }
}

