/**
 * The anomaly benchmark's workloads (documented in ANOMALY-BENCH.md): the normal services (busybox
 * httpd containers under the varying load of test/harness/anomaly-load.ts, and periodic-job
 * containers) and the six injections, each a bounded `docker exec` (every injected script runs under
 * busybox `timeout -s KILL`, and its loops have counts) of binaries from one known layer.
 */
import { readFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type Docker from "dockerode";
import { findBusybox } from "../../cli/demo-images.js";
import { parsePidList } from "../../agent/telemetry/cgroup-sampler.js";
import { parseStatSample } from "../../agent/telemetry/proc-sampler.js";
import { withTimeout } from "../../common/timeout.js";
import { dropFile } from "../harness/anomaly-images.js";
import { runContainer, waitFor } from "../harness/engine.js";
import { freePort } from "./cli-process.js";

/** Every container this benchmark starts is named with this prefix. */
export const NAME_PREFIX = "sl-anb-";

export const WEB_BUSYBOX = "/opt/web/bin/busybox";
export const JOB_BUSYBOX = "/opt/job/bin/busybox";

export interface Service {
  kind: "web" | "job";
  name: string;
  container: Docker.Container;
  id: string;
  /** httpd's loopback port (web only). */
  port?: number;
}

/** The periodic jobs: pause between runs (s) and the data each run compresses (64 KiB blocks). */
export const JOBS = [
  { sleepS: 3, blocks: 16 },
  { sleepS: 4, blocks: 32 },
  { sleepS: 2, blocks: 8 },
] as const;

async function answers(port: number): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    let head = "";
    const s = connect({ host: "127.0.0.1", port }, () => s.end("GET /index.html HTTP/1.0\r\n\r\n"));
    s.setTimeout(1000, () => s.destroy());
    s.on("data", (d: Buffer) => (head += d.toString("latin1")));
    s.on("error", () => undefined);
    s.on("close", () => resolve(head.includes(" 200 ")));
  });
}

/**
 * Starts `webs` httpd containers and one container per entry of JOBS; every container ends by
 * itself after `lifetimeS` (busybox `timeout` around httpd, a counted loop for the jobs).
 */
export async function startServices(docker: Docker, image: string, webs: number, lifetimeS: number): Promise<Service[]> {
  const out: Service[] = [];
  for (let i = 1; i <= webs; i++) {
    const port = await freePort();
    const name = `${NAME_PREFIX}web-${i}`;
    const cmd = [WEB_BUSYBOX, "timeout", "-s", "KILL", String(lifetimeS), WEB_BUSYBOX, "httpd", "-f", "-p", `127.0.0.1:${port}`, "-h", "/srv/www"];
    const container = await runContainer(docker, image, cmd, { name });
    out.push({ kind: "web", name, container, id: container.id, port });
  }
  for (const [i, j] of JOBS.entries()) {
    const name = `${NAME_PREFIX}job-${i + 1}`;
    const runs = Math.ceil(lifetimeS / j.sleepS);
    const loop = `i=0; while [ $i -lt ${runs} ]; do JOB_BLOCKS=${j.blocks} ${JOB_BUSYBOX} sh /opt/job/run.sh; sleep ${j.sleepS}; i=$((i+1)); done`;
    const container = await runContainer(docker, image, ["/bin/sh", "-c", loop], { name });
    out.push({ kind: "job", name, container, id: container.id });
  }
  for (const s of out) if (s.port !== undefined) await waitFor(`${s.name} to answer`, async () => ((await answers(s.port!)) ? true : undefined), 30_000, 200);
  return out;
}

/** Removes every container named with NAME_PREFIX (this benchmark's, from this or an interrupted run). */
export async function removeOurContainers(docker: Docker): Promise<number> {
  const list = await docker.listContainers({ all: true, filters: { name: [NAME_PREFIX] } });
  const ours = list.filter((c) => c.Names.some((n) => n.replace(/^\//, "").startsWith(NAME_PREFIX)));
  await Promise.all(ours.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
  return ours.length;
}

/**
 * A loopback TCP sink for the connection burst: accepts, holds each connection `holdMs`, closes.
 * At most `maxOpen` held at once (more are closed at once).
 */
export async function startSink(holdMs: number, maxOpen: number): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
  let accepted = 0;
  const open = new Set<Socket>();
  const server: Server = createServer((s) => {
    accepted++;
    s.on("error", () => undefined);
    if (open.size >= maxOpen) {
      s.destroy();
      return;
    }
    open.add(s);
    s.resume();
    const t = setTimeout(() => s.destroy(), holdMs);
    s.on("close", () => {
      clearTimeout(t);
      open.delete(s);
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    port,
    accepted: () => accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Where the dropped binary is written (the container's writable layer). */
export const DROPPED_DIR = "/tmp/.cache";
/** Named busybox: busybox picks its applet from its own name, so a copy must keep it. */
export const DROPPED_PATH = `${DROPPED_DIR}/busybox`;

export interface Injection {
  name: "cpu-burn" | "memory-leak" | "conn-burst" | "fork-storm" | "dropped-binary" | "io-storm";
  /** Which service it runs in. */
  target: "web" | "job";
  /** The executable every process of it runs from (so the layer providing it is the injected layer). */
  exe: string;
  /** The script (run by `exe sh -c`), bounded by `timeout -s KILL seconds`. */
  script: (o: { sinkPort: number }) => string;
  /** Prepared before the injection starts, outside its period (the dropped binary's write). */
  prepare?: (c: Docker.Container) => Promise<void>;
}

/**
 * The six injections. Each script's every command is `$B <applet>` with `$B` the one executable,
 * so all its processes are attributed to one layer. Loops are counted as well as timed out.
 */
export const INJECTIONS: readonly Injection[] = [
  {
    name: "cpu-burn",
    target: "web",
    exe: WEB_BUSYBOX,
    // One core busy in a shell loop.
    script: () => `i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done`,
  },
  {
    name: "memory-leak",
    target: "web",
    exe: WEB_BUSYBOX,
    // A 256 KiB string kept in a new shell variable every 0.1 s (about 2.5 MB/s of RSS growth); the
    // pause is `read -t` on a FIFO, a builtin, so no process is started per step.
    script: () =>
      `B=${WEB_BUSYBOX}; $B mkfifo /tmp/.leakf 2>/dev/null; c=$($B head -c 262144 /dev/zero | $B tr '\\0' x); i=0; ` +
      `while [ $i -lt 400 ]; do eval "v$i=\\$c"; i=$((i+1)); read -t 0.1 z <> /tmp/.leakf; done`,
  },
  {
    name: "conn-burst",
    target: "web",
    exe: WEB_BUSYBOX,
    // About 15 new outbound connections a second to a loopback port, each held ~2 s by the sink.
    script: ({ sinkPort }) =>
      `B=${WEB_BUSYBOX}; i=0; while [ $i -lt 400 ]; do $B nc 127.0.0.1 ${sinkPort} </dev/null >/dev/null 2>&1 & i=$((i+1)); ` +
      `if [ $((i % 15)) -eq 0 ]; then $B sleep 1; fi; done; wait`,
  },
  {
    name: "fork-storm",
    target: "job",
    exe: JOB_BUSYBOX,
    // Subshells (fork without exec) back to back, at most 50,000.
    script: () => `i=0; while [ $i -lt 50000 ]; do ( : ); i=$((i+1)); done`,
  },
  {
    name: "dropped-binary",
    target: "web",
    exe: DROPPED_PATH,
    // A busybox copy written into the writable layer through the engine, then run: it checksums
    // the web binary twice a second.
    script: () => `B=${DROPPED_PATH}; i=0; while [ $i -lt 100 ]; do $B md5sum ${WEB_BUSYBOX} >/dev/null; $B sleep 0.5; i=$((i+1)); done`,
    prepare: async (c) => {
      await dropFile(c, "/tmp", ".cache/busybox", findBusybox(), 0o755);
    },
  },
  {
    name: "io-storm",
    target: "job",
    exe: JOB_BUSYBOX,
    // Write 32 MiB with fsync, read it back, again and again (at most 200 rounds).
    script: () =>
      `B=${JOB_BUSYBOX}; i=0; while [ $i -lt 200 ]; do $B dd if=/dev/zero of=/tmp/.io bs=1048576 count=32 conv=fsync 2>/dev/null; ` +
      `$B dd if=/tmp/.io of=/dev/null bs=1048576 2>/dev/null; i=$((i+1)); done; $B rm -f /tmp/.io`,
  },
];

export interface ExecRun {
  /** Host pid of the exec'd process. */
  pid: number;
  /** ms since epoch: just before the exec started. */
  t0: number;
  /**
   * ms since epoch: the first look (every 100 ms) that found no process of the exec's tree left
   * (the exec'd process and every process it started, orphans too), so the label covers exactly
   * the time the injection ran (children killed with their shell may outlive it).
   */
  t1: number;
  exitCode: number | null;
  /** Processes of the tree seen. */
  processes: number;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "latin1");
  } catch {
    return undefined;
  }
}

/** The cgroup.procs file holding `pid` (cgroup v1 pids controller, else v2). */
function procsFileOf(pid: number): string | undefined {
  const text = readText(`/proc/${pid}/cgroup`);
  if (text === undefined) return undefined;
  const lines = text.split("\n");
  const v1 = lines.find((l) => /^\d+:pids:/.test(l));
  if (v1 !== undefined) return `/sys/fs/cgroup/pids${v1.slice(v1.indexOf(":pids:") + 6)}/cgroup.procs`;
  const v2 = lines.find((l) => l.startsWith("0::"));
  return v2 === undefined ? undefined : `/sys/fs/cgroup${v2.slice(3)}/cgroup.procs`;
}

/** Follows one process tree inside a container's cgroup: members stay members when orphaned. */
class TreeWatch {
  /** pid -> start time, of the members still alive. */
  private readonly alive = new Map<number, bigint>();
  seen = 0;

  constructor(
    root: number,
    private readonly procsFile: string | undefined,
  ) {
    const st = this.stat(root);
    if (st !== undefined) this.add(root, st.startTime);
  }

  private stat(pid: number) {
    const text = readText(`/proc/${pid}/stat`);
    return text === undefined ? undefined : parseStatSample(text);
  }

  private add(pid: number, start: bigint): void {
    this.alive.set(pid, start);
    this.seen++;
  }

  /** One look: adds new children of members, drops members that are gone; returns how many are alive. */
  look(): number {
    const pids = this.procsFile === undefined ? [] : parsePidList(readText(this.procsFile) ?? "").slice(0, 10_000);
    for (const pid of pids) {
      if (this.alive.has(pid)) continue;
      const st = this.stat(pid);
      if (st !== undefined && this.alive.has(st.ppid)) this.add(pid, st.startTime);
    }
    for (const [pid, start] of [...this.alive]) {
      const st = this.stat(pid);
      if (st === undefined || st.startTime !== start || st.state === "Z") this.alive.delete(pid);
    }
    return this.alive.size;
  }
}

/**
 * Runs one injection in `c` for `seconds` (busybox `timeout -s KILL`), waiting until its whole
 * process tree is gone. `during` is called about every 250 ms with the exec's host pid while it runs.
 */
export async function runInjection(c: Docker.Container, inj: Injection, seconds: number, sinkPort: number, during: (pid: number) => void): Promise<ExecRun> {
  const cmd = [inj.exe, "timeout", "-s", "KILL", String(seconds), inj.exe, "sh", "-c", inj.script({ sinkPort })];
  const ex = await c.exec({ Cmd: cmd, AttachStdout: false, AttachStderr: false });
  const t0 = Date.now();
  await ex.start({ Detach: true });
  const end = t0 + (seconds + 15) * 1000;
  let pid = 0;
  for (; pid === 0; await new Promise((r) => setTimeout(r, 20))) {
    const info = await withTimeout(ex.inspect(), 10_000, "exec inspect");
    if (info.Pid > 0) pid = info.Pid;
    else if (!info.Running && Date.now() - t0 > 2000) throw new Error(`injection ${inj.name} ended before its pid was seen (exit ${info.ExitCode})`);
    if (Date.now() > end) throw new Error(`injection ${inj.name}: no pid`);
  }
  const tree = new TreeWatch(pid, procsFileOf(pid));
  let t1 = 0;
  let lastDuring = 0;
  for (;;) {
    const now = Date.now();
    if (tree.look() === 0) {
      t1 = now;
      break;
    }
    if (now - lastDuring >= 250) {
      lastDuring = now;
      during(pid);
    }
    if (now > end) throw new Error(`injection ${inj.name} still running ${seconds + 15} s after it started`);
    await new Promise((r) => setTimeout(r, 100));
  }
  let exitCode: number | null = null;
  for (let i = 0; i < 50; i++) {
    const info = await withTimeout(ex.inspect(), 10_000, "exec inspect");
    if (!info.Running) {
      exitCode = info.ExitCode ?? null;
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { pid, t0, t1, exitCode, processes: tree.seen };
}
