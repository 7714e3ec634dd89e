/**
 * Process lifecycle events from the kernel, streamed by bpftrace (v0.17 here) from the
 * `sched:sched_process_exec` and `sched_process_fork` tracepoints, and `sched_switch` away from a
 * process's dying last thread (its exit, with final totals). An exec is
 * seen the moment it happens, with the mount namespace that keys it to a container, instead of
 * being found (or missed) by the next /proc scan; a fork names the parent of a process that may
 * never exec; the exit of a process's last thread carries its CPU, I/O, fault and context-switch
 * totals, so that a process living less than a sampling tick is still charged to a layer.
 * When bpftrace cannot run or dies, callers fall back to polling: see `ebpfUnavailableReason` and
 * the "exit" event.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { accessSync, constants, existsSync } from "node:fs";
import path from "node:path";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";

export interface ExecEvent {
  pid: number;
  ppid: number;
  /** bprm filename as passed to exec (may be relative, e.g. "./x"). */
  filename: string;
  /**
   * Set when `filename` reached bpftrace's string limit (FILENAME_MAX_BYTES) and may be cut short:
   * a path that long cannot be told from a truncated one.
   */
  filenameTruncated?: boolean;
  /** inode of the process's mount namespace: the in-kernel container key. */
  mntns: number;
  /** task start time in clock ticks since boot (same unit as field 22 of /proc/<pid>/stat, USER_HZ=100): curtask->start_boottime / 10000000 */
  startTimeTicks: bigint;
  comm: string;
  /** wall-clock time of the exec */
  at: Date;
  /** time of the exec on the kernel's CLOCK_MONOTONIC (bpftrace's nsecs), ns: to compare with kernel times */
  monoNs: bigint;
}

/** A process (or thread: the tracepoint cannot tell them apart) created by `parent`. */
export interface ForkEvent {
  /** tgid of the forking process. */
  parent: number;
  /** pid of the new task (a thread id when a thread was created). */
  child: number;
  mntns: number;
  monoNs: bigint;
}

/**
 * The last thread of a process exited: its totals over its whole life (every thread, dead ones
 * included). I/O totals include what the kernel folded in from its reaped children.
 */
export interface ProcessExitEvent {
  /** tgid of the process. */
  pid: number;
  /** tgid of its real parent at exit: the process that reaps it (and gets its I/O folded in). */
  ppid: number;
  mntns: number;
  /** group leader's start time in clock ticks (field 22 of /proc/<pid>/stat): with pid, the identity. */
  startTimeTicks: bigint;
  monoNs: bigint;
  cpuNs: number;
  rchar: number;
  wchar: number;
  readBytes: number;
  writeBytes: number;
  minflt: number;
  majflt: number;
  nvcsw: number;
  nivcsw: number;
}

export type BpftraceLine =
  | { kind: "exec"; event: ExecEvent }
  | { kind: "fork"; event: ForkEvent }
  | { kind: "exit"; event: ProcessExitEvent }
  | { kind: "lost"; count: number }
  | { kind: "attached"; probes: number }
  | { kind: "ignored" } // other well-formed types we do not need
  | { kind: "malformed"; reason: string };

/**
 * bpftrace's per-str() buffer, NUL included. 0.17 reads BPFTRACE_STRLEN and refuses more than 200
 * (strings live on the 512-byte BPF stack); later versions renamed it BPFTRACE_MAX_STRLEN, so both
 * are set.
 */
export const BPFTRACE_STRLEN = 200;
/** The longest filename that arrives whole; one this long may have been cut. */
export const FILENAME_MAX_BYTES = BPFTRACE_STRLEN - 1;

/** TASK_COMM_LEN - 1: the kernel keeps at most 15 bytes of a command name. */
const COMM_MAX_BYTES = 15;
const PID_MAX_LIMIT = 4_194_304;
/** A printf line is < 4 KiB even with every byte escaped; anything far longer is garbage. */
const MAX_LINE_CHARS = 64 * 1024;
const STDERR_TAIL_LINES = 8;

/**
 * The printf line: five numbers separated by spaces, then a tab, comm, a tab and the filename.
 * comm and filename may hold spaces, tabs and newlines; the filename is last so that it needs no
 * delimiter of its own, and a tab inside comm is resolved by splitCommFilename.
 */
const PRINTF = String.raw`"%d %d %u %llu %llu\t%s\t%s\n"`;
const HEAD = /^(\d{1,10}) (\d{1,10}) (\d{1,10}) (\d{1,20}) (\d{1,20})$/;
/**
 * Fork and exit lines hold only numbers and start with a word, where an exec line starts with a
 * digit: a line's kind is never in doubt, and neither carries text from the process.
 */
const FORK_PRINTF = String.raw`"fork %d %d %u %llu\n"`;
const FORK_LINE = /^fork (\d{1,10}) (\d{1,10}) (\d{1,10}) (\d{1,20})\n$/;
/** include/linux/sched.h: the state of a task in its last schedule(). */
const TASK_DEAD = 0x80;
const EXIT_PRINTF = String.raw`"exit %d %d %u %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu\n"`;
const EXIT_LINE = new RegExp(String.raw`^exit (\d{1,10}) (\d{1,10}) (\d{1,10})((?: \d{1,20}){11})\n$`);

/**
 * The bpftrace program text. Events from the host mount namespace `hostMntNs` are filtered in kernel
 * (not emitted) when given, except execs by children of `readyParent`: BpfExecSource execs a
 * sentinel from its own pid to learn when the probe is live, and drops the rest of those itself.
 */
export function execProgram(hostMntNs?: number, o?: { readyParent?: number }): string {
  if (hostMntNs !== undefined && !(Number.isSafeInteger(hostMntNs) && hostMntNs > 0 && hostMntNs <= 0xffff_ffff)) {
    throw new ShadowError(Code.InvalidArgument, `hostMntNs must be a mount namespace inode (1..2^32-1), got ${hostMntNs}`);
  }
  const ready = o?.readyParent;
  if (ready !== undefined && !(Number.isSafeInteger(ready) && ready > 0 && ready <= PID_MAX_LIMIT)) {
    throw new ShadowError(Code.InvalidArgument, `readyParent must be a pid, got ${ready}`);
  }
  const mntns = "curtask->nsproxy->mnt_ns->ns.inum";
  const parent = ready === undefined ? "" : ` || curtask->real_parent->tgid == ${ready}`;
  const filter = hostMntNs === undefined ? "" : `/ ${mntns} != ${hostMntNs}${parent} /\n`;
  const notHost = hostMntNs === undefined ? "" : ` && ${mntns} != ${hostMntNs}`;
  // Totals of the thread group: what dead threads left in signal_struct plus the last thread's own.
  const total = (field: string): string => `curtask->signal->${field} + curtask->${field}`;
  // start_boottime is in ns; /proc/<pid>/stat shows it as clock ticks of 1/USER_HZ = 10 ms.
  // nsecs is bpf_ktime_get_ns(), i.e. CLOCK_MONOTONIC.
  return (
    "tracepoint:sched:sched_process_exec\n" +
    filter +
    "{\n" +
    `  printf(${PRINTF}, pid, curtask->real_parent->tgid, ${mntns}, ` +
    "curtask->start_boottime / 10000000, nsecs, comm, str(args->filename));\n" +
    "}\n" +
    "tracepoint:sched:sched_process_fork\n" +
    (hostMntNs === undefined ? "" : `/ ${mntns} != ${hostMntNs} /\n`) +
    "{\n" +
    `  printf(${FORK_PRINTF}, pid, args->child_pid, ${mntns}, nsecs);\n` +
    "}\n" +
    // The exit is read at the dying task's last context switch (state TASK_DEAD), not at
    // sched_process_exit: there its CPU time lags by up to a scheduler tick plus the whole exit
    // path, 15-35% of a 10 ms process's measured here. By then its namespaces are released, so
    // sched_process_exit notes the mount namespace of a process's last thread (signal->live is 0)
    // for the switch to print: one event per process.
    "tracepoint:sched:sched_process_exit\n" +
    `/ curtask->signal->live.counter == 0${notHost} /\n` +
    "{\n" +
    `  @exiting[tid] = ${mntns};\n` +
    "}\n" +
    "tracepoint:sched:sched_switch\n" +
    `/ curtask->__state == ${TASK_DEAD} && @exiting[tid] != 0 /\n` +
    "{\n" +
    `  printf(${EXIT_PRINTF}, pid, curtask->real_parent->tgid, @exiting[tid], ` +
    "curtask->group_leader->start_boottime / 10000000, nsecs, " +
    "curtask->signal->sum_sched_runtime + curtask->se.sum_exec_runtime, " +
    [total("ioac.rchar"), total("ioac.wchar"), total("ioac.read_bytes"), total("ioac.write_bytes"), total("min_flt"), total("maj_flt"), total("nvcsw"), total("nivcsw")].join(", ") +
    ");\n" +
    "  delete(@exiting[tid]);\n" +
    "}\n" +
    // Not printed when bpftrace stops.
    "END { clear(@exiting); }\n"
  );
}

type Json = Record<string, unknown>;
const isRecord = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * bpftrace 0.17 escapes each byte >= 0x80 of a string as `\uffffffXX` (a signed char printed as an
 * int), which JSON reads as U+FFFF followed by "ffXX". Rewrite those to `\u00XX` so that the parsed
 * string holds one char per byte, to be decoded as UTF-8 afterwards. Escapes are consumed in pairs so
 * that an escaped backslash followed by the text "uffffff.." is left alone.
 */
const ESCAPE = /\\(?:u[fF]{6}([0-9a-fA-F]{2})|[\s\S])/g;
function rewriteHighBytes(line: string): { text: string; bytes: boolean } {
  if (!line.includes("\\u")) return { text: line, bytes: false };
  let bytes = false;
  const text = line.replace(ESCAPE, (m: string, hex: string | undefined) => {
    if (hex === undefined) return m;
    bytes = true;
    return `\\u00${hex}`;
  });
  return { text, bytes };
}

/** The kernel names a task after the basename of the exec'd path, cut to 15 bytes. */
function kernelComm(filename: string): string {
  const base = filename.slice(filename.lastIndexOf("/") + 1);
  return Buffer.from(base, "utf8").subarray(0, COMM_MAX_BYTES).toString("utf8");
}

/**
 * Splits "comm\tfilename". comm holds a tab only when the file's name does (it is the basename), so
 * among the tabs that can end a <= 15-byte comm, the one whose comm matches the filename's basename
 * wins; otherwise the first tab.
 */
function splitCommFilename(rest: string): [string, string] | undefined {
  const first = rest.indexOf("\t");
  if (first < 0) return undefined;
  for (let i = first; i >= 0 && i <= COMM_MAX_BYTES; i = rest.indexOf("\t", i + 1)) {
    const comm = rest.slice(0, i);
    const filename = rest.slice(i + 1);
    if (comm === kernelComm(filename)) return [comm, filename];
  }
  return [rest.slice(0, first), rest.slice(first + 1)];
}

/** A total as a number, or undefined past 2^53 (not exact; no real process gets there: 2^53 ns is 104 days of CPU, 2^53 B is 8 PiB). */
function exactCount(text: string): number | undefined {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

function parseFork(data: string): BpftraceLine {
  const m = FORK_LINE.exec(data);
  if (m === null) return { kind: "malformed", reason: "fork line is not 'fork <parent> <child> <mntns> <nsecs>'" };
  const parent = Number(m[1]);
  const child = Number(m[2]);
  const mntns = Number(m[3]);
  if (parent < 1 || parent > PID_MAX_LIMIT || child < 1 || child > PID_MAX_LIMIT) return { kind: "malformed", reason: `fork pid out of range (${parent} -> ${child})` };
  if (mntns < 1 || mntns > 0xffff_ffff) return { kind: "malformed", reason: `mntns ${mntns} out of range` };
  return { kind: "fork", event: { parent, child, mntns, monoNs: BigInt(m[4] ?? "0") } };
}

function parseExit(data: string): BpftraceLine {
  const m = EXIT_LINE.exec(data);
  if (m === null) return { kind: "malformed", reason: "exit line is not 'exit' and 14 unsigned numbers" };
  const pid = Number(m[1]);
  const ppid = Number(m[2]);
  const mntns = Number(m[3]);
  if (pid < 1 || pid > PID_MAX_LIMIT) return { kind: "malformed", reason: `pid ${pid} out of range` };
  if (ppid > PID_MAX_LIMIT) return { kind: "malformed", reason: `ppid ${ppid} out of range` };
  if (mntns < 1 || mntns > 0xffff_ffff) return { kind: "malformed", reason: `mntns ${mntns} out of range` };
  const rest = (m[4] ?? "").trim().split(" ");
  const start = BigInt(rest[0] ?? "0");
  const monoNs = BigInt(rest[1] ?? "0");
  const nums = rest.slice(2).map(exactCount);
  if (nums.some((n) => n === undefined)) return { kind: "malformed", reason: "exit totals beyond 2^53" };
  const [cpuNs, rchar, wchar, readBytes, writeBytes, minflt, majflt, nvcsw, nivcsw] = nums as number[] as [number, number, number, number, number, number, number, number, number];
  return { kind: "exit", event: { pid, ppid, mntns, startTimeTicks: start, monoNs, cpuNs, rchar, wchar, readBytes, writeBytes, minflt, majflt, nvcsw, nivcsw } };
}

function parsePrintf(data: string, monoToWall: (ns: bigint) => Date): BpftraceLine {
  if (data.startsWith("fork ")) return parseFork(data);
  if (data.startsWith("exit ")) return parseExit(data);
  if (!data.endsWith("\n")) return { kind: "malformed", reason: "printf data does not end with a newline" };
  const body = data.slice(0, -1);
  const tab = body.indexOf("\t");
  if (tab < 0) return { kind: "malformed", reason: "printf data has no tab before comm" };
  const head = HEAD.exec(body.slice(0, tab));
  if (head === null) return { kind: "malformed", reason: "printf data does not start with 5 unsigned numbers (pid ppid mntns start nsecs)" };
  const split = splitCommFilename(body.slice(tab + 1));
  if (split === undefined) return { kind: "malformed", reason: "printf data has no tab between comm and filename" };
  const [comm, filename] = split;
  const pid = Number(head[1]);
  const ppid = Number(head[2]);
  const mntns = Number(head[3]);
  if (pid < 1 || pid > PID_MAX_LIMIT) return { kind: "malformed", reason: `pid ${pid} out of range` };
  if (ppid > PID_MAX_LIMIT) return { kind: "malformed", reason: `ppid ${ppid} out of range` };
  if (mntns < 1 || mntns > 0xffff_ffff) return { kind: "malformed", reason: `mntns ${mntns} out of range` };
  if (filename === "") return { kind: "malformed", reason: "empty filename" };
  // Each char of comm came from at least one of its <= 15 bytes.
  if ([...comm].length > COMM_MAX_BYTES) return { kind: "malformed", reason: "comm longer than the kernel's 15 bytes" };
  const monoNs = BigInt(head[5]);
  const event: ExecEvent = {
    pid,
    ppid,
    filename,
    mntns,
    startTimeTicks: BigInt(head[4]),
    comm,
    at: monoToWall(monoNs),
    monoNs,
  };
  if (Buffer.byteLength(filename, "utf8") >= FILENAME_MAX_BYTES) event.filenameTruncated = true;
  return { kind: "exec", event };
}

function count(data: unknown, field: string): number | undefined {
  if (!isRecord(data)) return undefined;
  const n = data[field];
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Pure parser for one stdout line; `monoToWall(ns)` converts bpftrace's nsecs (CLOCK_MONOTONIC) to a Date. */
export function parseBpftraceLine(line: string, monoToWall: (ns: bigint) => Date): BpftraceLine {
  const trimmed = line.trim();
  // bpftrace prints empty lines on exit (where maps would go).
  if (trimmed === "") return { kind: "ignored" };
  if (trimmed.length > MAX_LINE_CHARS) return { kind: "malformed", reason: `line longer than ${MAX_LINE_CHARS} chars` };
  const { text, bytes } = rewriteHighBytes(trimmed);
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    return { kind: "malformed", reason: `not JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (!isRecord(msg) || typeof msg["type"] !== "string") return { kind: "malformed", reason: 'not an object with a string "type"' };
  const data = msg["data"];
  switch (msg["type"]) {
    case "printf": {
      if (typeof data !== "string") return { kind: "malformed", reason: "printf data is not a string" };
      // Only 0.17's byte escapes produce chars in 0x80-0xff here; real Unicode would be above it.
      const decoded = bytes && /^[\x00-\xff]*$/.test(data) ? Buffer.from(data, "latin1").toString("utf8") : data;
      return parsePrintf(decoded, monoToWall);
    }
    case "lost_events": {
      const n = count(data, "events");
      return n === undefined ? { kind: "malformed", reason: "lost_events without a data.events count" } : { kind: "lost", count: n };
    }
    case "attached_probes": {
      const n = count(data, "probes");
      return n === undefined ? { kind: "malformed", reason: "attached_probes without a data.probes count" } : { kind: "attached", probes: n };
    }
    default:
      return { kind: "ignored" };
  }
}

const DEFAULT_TRACING_ROOTS = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const DEFAULT_BTF = "/sys/kernel/btf/vmlinux";

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** A program to run: a path as given, or the first on PATH; undefined when there is none. */
function findExecutable(bin: string): string | undefined {
  if (bin.includes("/")) return isExecutable(bin) ? bin : undefined;
  for (const dir of (process.env["PATH"] ?? "").split(":")) {
    if (dir === "") continue;
    const candidate = path.join(dir, bin);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** Why eBPF cannot be used here, or undefined when it can be tried: bpftrace not found on PATH/at the given path, not root (process.geteuid()!==0), tracefs not mounted (neither /sys/kernel/tracing/events/sched/sched_process_exec nor /sys/kernel/debug/tracing/events/sched/sched_process_exec exists), or no kernel BTF (the program reads task_struct fields). */
export function ebpfUnavailableReason(o?: { bpftrace?: string; tracingRoots?: string[]; btf?: string }): string | undefined {
  const bin = o?.bpftrace ?? "bpftrace";
  if (findExecutable(bin) === undefined) {
    return bin.includes("/")
      ? `bpftrace not found or not executable at ${bin}: install it with \`apt-get install -y bpftrace\` or point the agent at the right path.`
      : "bpftrace not found on PATH: install it with `apt-get install -y bpftrace`.";
  }
  if (process.geteuid?.() !== 0) return "eBPF tracing needs root (effective uid 0): run the agent as root or fall back to /proc polling.";
  const roots = o?.tracingRoots ?? DEFAULT_TRACING_ROOTS;
  if (!roots.some((root) => existsSync(path.join(root, "events/sched/sched_process_exec")))) {
    return `tracefs is not mounted (no events/sched/sched_process_exec under ${roots.join(" or ")}): mount it with \`mount -t tracefs nodev /sys/kernel/tracing\`.`;
  }
  const btf = o?.btf ?? DEFAULT_BTF;
  if (!existsSync(btf)) {
    return `the kernel exposes no BTF (${btf} is missing), which bpftrace needs to read task fields: use a kernel built with CONFIG_DEBUG_INFO_BTF=y or fall back to /proc polling.`;
  }
  return undefined;
}

export interface BpfExecSourceOptions {
  bpftrace?: string;
  hostMntNs?: number;
  log: Logger;
  /** ms to wait for the probe to be attached and seen live, default 15000 */
  startTimeoutMs?: number;
  /** BPFTRACE_PERF_RB_PAGES, default 1024 (sized so a storm of 1,000 execs/s loses nothing) */
  perfRbPages?: number;
}

type Events = { exec: [ExecEvent]; fork: [ForkEvent]; processExit: [ProcessExitEvent]; lost: [number]; exit: [string] };

/**
 * Runs bpftrace and turns its JSON lines into "exec", "fork" and "processExit" events (fork and
 * exit events from the host's mount namespace are filtered in kernel). "lost" reports perf-buffer overflows
 * (events the kernel dropped); "exit" is emitted (with a reason) if bpftrace dies after start()
 * resolved, so the caller can fall back to polling.
 */
export class BpfExecSource extends EventEmitter<Events> {
  readonly kind = "ebpf";
  /** events: execs emitted; forks, exits: those emitted; lost: dropped by the kernel; malformed: stdout lines skipped; truncated: execs whose filename may be cut. */
  readonly counters = { events: 0, forks: 0, exits: 0, lost: 0, malformed: 0, truncated: 0 };

  readonly #bin: string;
  readonly #hostMntNs: number | undefined;
  readonly #program: string;
  readonly #log: Logger;
  readonly #startTimeoutMs: number;
  readonly #perfRbPages: number;
  #child: ChildProcess | undefined;
  #closed: Promise<void> = Promise.resolve();
  #isClosed = true;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #live = false;
  #onAttached: ((probes: number) => void) | undefined;
  #onSentinel: (() => void) | undefined;
  /** pids of the sentinel execs started to learn that the probe is live. */
  readonly #sentinels = new Set<number>();
  #offsetNs = 0n;
  #stdoutRest = "";
  #skippingLongLine = false;
  #stderrRest = "";
  #stderrTail: string[] = [];
  readonly #killOnExit = (): void => {
    this.#child?.kill("SIGKILL");
  };
  readonly #monoToWall = (ns: bigint): Date => new Date(Number((this.#offsetNs + ns) / 1_000_000n));

  constructor(o: BpfExecSourceOptions) {
    super();
    this.#bin = o.bpftrace ?? "bpftrace";
    this.#hostMntNs = o.hostMntNs;
    this.#program = execProgram(o.hostMntNs, { readyParent: process.pid });
    this.#log = o.log.child({ source: "ebpf" });
    this.#startTimeoutMs = o.startTimeoutMs ?? 15_000;
    this.#perfRbPages = o.perfRbPages ?? 1024;
    const p = this.#perfRbPages;
    // The perf ring buffer is mmap'd per CPU and must be a power of two pages.
    if (!(Number.isSafeInteger(p) && p > 0 && (p & (p - 1)) === 0)) {
      throw new ShadowError(Code.InvalidArgument, `perfRbPages must be a power of two, got ${p}`);
    }
  }

  /**
   * Spawns bpftrace; resolves once the probe is live; rejects with a ShadowError(Code.FailedPrecondition,
   * <reason incl. bpftrace's stderr last lines>) if it exits or times out first.
   */
  start(): Promise<void> {
    this.#starting ??= this.#start();
    return this.#starting;
  }

  /** Kills bpftrace (SIGTERM then SIGKILL after 2 s); idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    const child = this.#child;
    if (child === undefined || this.#isClosed) return;
    const force = setTimeout(() => child.kill("SIGKILL"), 2000);
    child.kill("SIGTERM");
    await this.#closed;
    clearTimeout(force);
    this.#log.info({ ...this.counters }, "bpftrace stopped");
  }

  #start(): Promise<void> {
    if (this.#stopping !== undefined) {
      return Promise.reject(new ShadowError(Code.FailedPrecondition, "BpfExecSource was stopped before start()"));
    }
    return new Promise<void>((resolve, reject) => {
      const t0 = performance.now();
      // hrtime is CLOCK_MONOTONIC, the clock of bpftrace's nsecs.
      this.#offsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
      let settled = false;
      let sentinelTimer: NodeJS.Timeout | undefined;
      let attachedMs = 0;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        clearTimeout(sentinelTimer);
        this.#onAttached = undefined;
        this.#onSentinel = undefined;
        return true;
      };
      const fail = (message: string, cause?: unknown): void => {
        if (!settle()) return;
        this.#child?.kill("SIGKILL");
        reject(new ShadowError(Code.FailedPrecondition, message, cause === undefined ? undefined : { cause }));
      };
      const live = (confirmed: boolean): void => {
        if (!settle()) return;
        this.#live = true;
        // Sentinels started before the probe was live never report; forget them before pids recycle.
        setTimeout(() => this.#sentinels.clear(), 5000).unref();
        const startupMs = Math.round(performance.now() - t0);
        this.#log.info({ attachedMs, startupMs, confirmed, pid: this.#child?.pid }, "bpftrace is tracing sched_process_exec, sched_process_fork and process exits");
        resolve();
      };
      const timer = setTimeout(
        () => fail(`bpftrace (${this.#bin}) did not attach its probe within ${this.#startTimeoutMs} ms${this.#stderrSuffix()}`),
        this.#startTimeoutMs,
      );

      // bpftrace prints attached_probes before it attaches anything (0.17: then BEGIN, then the
      // tracepoint), so execs right after it would be missed. The probe is known to be live once it
      // reports an exec of our own: run a sentinel every 50 ms until one shows up.
      const sentinelBin = findExecutable("true") ?? "/bin/true";
      const runSentinel = (): void => {
        if (settled) return;
        const s = spawn(sentinelBin, [], { stdio: "ignore" });
        s.once("error", (err) => {
          this.#log.warn({ err: err.message, sentinel: sentinelBin }, "cannot run the sentinel exec; assuming the probe is live");
          live(false);
        });
        if (s.pid !== undefined) this.#sentinels.add(s.pid);
        sentinelTimer = setTimeout(runSentinel, 50);
      };
      this.#onAttached = (probes) => {
        if (probes < 1) return fail(`bpftrace (${this.#bin}) attached no probes${this.#stderrSuffix()}`);
        attachedMs = Math.round(performance.now() - t0);
        runSentinel();
      };
      this.#onSentinel = () => live(true);

      const child = spawn(this.#bin, ["-f", "json", "-e", this.#program], {
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          BPFTRACE_STRLEN: String(BPFTRACE_STRLEN),
          BPFTRACE_MAX_STRLEN: String(BPFTRACE_STRLEN),
          BPFTRACE_PERF_RB_PAGES: String(this.#perfRbPages),
        },
      });
      this.#child = child;
      this.#isClosed = false;
      this.#closed = new Promise((done) => child.once("close", () => done()));
      process.on("exit", this.#killOnExit);

      child.stdout?.setEncoding("utf8");
      child.stdout?.on("data", (chunk: string) => this.#onStdout(chunk));
      child.stderr?.setEncoding("utf8");
      child.stderr?.on("data", (chunk: string) => this.#onStderr(chunk));
      child.once("error", (err) => fail(`cannot run bpftrace (${this.#bin}): ${err.message}`, err));
      // "close" comes after stdout and stderr are drained, so the stderr tail is complete.
      child.once("close", (code, signal) => {
        this.#isClosed = true;
        process.off("exit", this.#killOnExit);
        if (this.#stdoutRest !== "") this.#onLine(this.#stdoutRest);
        this.#stdoutRest = "";
        if (this.#stderrRest !== "") this.#keepStderr(this.#stderrRest);
        const how = signal === null ? `code ${code}` : `signal ${signal}`;
        if (!this.#live) {
          const why = this.#stopping !== undefined ? "was stopped" : `exited with ${how}`;
          fail(`bpftrace (${this.#bin}) ${why} before attaching its probe${this.#stderrSuffix()}`);
        } else if (this.#stopping === undefined) {
          const reason = `bpftrace exited unexpectedly with ${how} after ${this.counters.events} exec events${this.#stderrSuffix()}`;
          this.#log.warn({ code, signal, ...this.counters }, reason);
          this.emit("exit", reason);
        }
      });
    });
  }

  #stderrSuffix(): string {
    return this.#stderrTail.length === 0 ? " (stderr empty)" : `; stderr: ${this.#stderrTail.join(" | ")}`;
  }

  #onStdout(chunk: string): void {
    let start = 0;
    for (let nl = chunk.indexOf("\n"); nl >= 0; nl = chunk.indexOf("\n", start)) {
      const piece = chunk.slice(start, nl);
      start = nl + 1;
      if (this.#skippingLongLine) {
        this.#skippingLongLine = false;
        continue;
      }
      this.#onLine(this.#stdoutRest + piece);
      this.#stdoutRest = "";
    }
    if (this.#skippingLongLine) return;
    this.#stdoutRest += chunk.slice(start);
    if (this.#stdoutRest.length > MAX_LINE_CHARS) {
      this.#countMalformed(`line longer than ${MAX_LINE_CHARS} chars`, this.#stdoutRest);
      this.#stdoutRest = "";
      this.#skippingLongLine = true;
    }
  }

  #onLine(line: string): void {
    const parsed = parseBpftraceLine(line, this.#monoToWall);
    switch (parsed.kind) {
      case "exec": {
        const e = parsed.event;
        if (e.ppid === process.pid && this.#sentinels.delete(e.pid)) {
          this.#onSentinel?.();
          return;
        }
        // Let through in kernel only as the sentinel's siblings: other children of this process.
        if (e.mntns === this.#hostMntNs) return;
        this.counters.events++;
        if (e.filenameTruncated === true) this.counters.truncated++;
        this.emit("exec", e);
        return;
      }
      case "fork":
        this.counters.forks++;
        this.emit("fork", parsed.event);
        return;
      case "exit":
        this.counters.exits++;
        this.emit("processExit", parsed.event);
        return;
      case "lost":
        this.counters.lost += parsed.count;
        this.#log.warn({ lost: parsed.count, totalLost: this.counters.lost }, "bpftrace perf buffer overflowed: exec, fork or exit events lost");
        this.emit("lost", parsed.count);
        return;
      case "attached":
        this.#onAttached?.(parsed.probes);
        return;
      case "malformed":
        this.#countMalformed(parsed.reason, line);
        return;
      case "ignored":
        return;
    }
  }

  #countMalformed(reason: string, line: string): void {
    this.counters.malformed++;
    // The first few are worth a warning; a flood of them would only drown the log.
    const level = this.counters.malformed <= 10 ? "warn" : "debug";
    this.#log[level]({ reason, line: line.slice(0, 300), malformed: this.counters.malformed }, "skipped a bpftrace output line");
  }

  #onStderr(chunk: string): void {
    const lines = (this.#stderrRest + chunk).split("\n");
    this.#stderrRest = lines.pop() ?? "";
    if (this.#stderrRest.length > 4096) this.#stderrRest = this.#stderrRest.slice(0, 4096);
    for (const line of lines) this.#keepStderr(line);
  }

  #keepStderr(raw: string): void {
    const line = raw.trim();
    // bpftrace 0.17 prints an "ERROR: ... couldn't set RLIMIT_MEMLOCK" line at every start where it
    // lacks CAP_SYS_RESOURCE, although the kernel charges BPF memory to the cgroup and loading works.
    if (line === "" || line.includes("RLIMIT_MEMLOCK")) return;
    this.#stderrTail.push(line.slice(0, 500));
    if (this.#stderrTail.length > STDERR_TAIL_LINES) this.#stderrTail.shift();
    if (this.#live) this.#log.warn({ stderr: line }, "bpftrace stderr");
  }
}
