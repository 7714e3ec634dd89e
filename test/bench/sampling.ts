/**
 * Sampling benchmark (issue: runtime telemetry). 50 containers x 20 idle processes (1,000).
 *
 * 1. Per-pass cost, in this process: a full telemetry pass (every /proc and cgroup file of every
 *    process and container read and parsed, attributed to layers, added to the windows) against a
 *    baseline loop that only reads the same files (same syscalls, same buffer, no decoding or
 *    parsing). CPU time from process.cpuUsage(); ratio = full / baseline.
 * 2. The real agent (`shadowlayer agent`, a child process, sampling at 1 Hz with its default
 *    gating) for 30 s: its own CPU (utime+stime from /proc/<pid>/stat) and RSS. bpftrace runs as
 *    its own process; its CPU is reported separately.
 * 3. A bounded exec storm in one container (4 workers, paced at 1,000 execs/s in total, 10 s):
 *    exec events the agent attributed to that container (from its windows at the aggregator) vs.
 *    execs the workers report having done, plus the kernel's lost-event count.
 *
 * Progress goes to stderr; the last stdout line is one JSON object. Run with `npm run bench:sampling`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Docker from "dockerode";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { CgroupSampler } from "../../agent/telemetry/cgroup-sampler.js";
import { NetSampler } from "../../agent/telemetry/net-sampler.js";
import { cpuUsageFile, ProcessTable } from "../../agent/telemetry/process-table.js";
import { ProcSampler } from "../../agent/telemetry/proc-sampler.js";
import { Telemetry } from "../../agent/telemetry/telemetry.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/server.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { withTimeout } from "../../common/timeout.js";
import { cleanupContainers, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";
import { mapLimit, median, round3 } from "./common.js";

const CONTAINERS = 50;
const PROCS_PER_CONTAINER = 20;
const PASSES = 10;
const AGENT_SECONDS = 30;
const STORM_WORKERS = 4;
const STORM_SECONDS = 10;
const STORM_PER_SECOND = 1000;
const OVERALL_TIMEOUT_MS = 15 * 60_000;

function say(msg: string): void {
  process.stderr.write(`[bench:sampling] ${msg}\n`);
}

const buf = Buffer.allocUnsafe(64 * 1024);
/** The same read the samplers do (open, read into a shared buffer, close), without decoding. */
function rawRead(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return 0;
  }
  try {
    return readSync(fd, buf, 0, buf.length, null);
  } catch {
    return 0;
  } finally {
    closeSync(fd);
  }
}

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** utime+stime of a process in microseconds (USER_HZ 100). */
function procCpuMicros(pid: number): number {
  const t = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = t.slice(t.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) * 10_000;
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

const IDLE = `for i in $(seq ${PROCS_PER_CONTAINER - 1}); do sleep 3600 & done; wait`;

/**
 * One storm worker: 25 execs per 100 ms slot, paced against /proc/uptime (shell builtins only, so
 * the only execs are the counted /bin/true and /bin/usleep); stops after its slots or 3x the
 * planned time, whichever comes first; prints its exec count.
 */
const STORM_WORKER = [
  "n=0; read up x < /proc/uptime; start=${up%.*}${up#*.}; slot=0; now=$start",
  `while [ $slot -lt ${STORM_SECONDS * 10} ] && [ $now -lt $((start + ${STORM_SECONDS * 300})) ]; do`,
  `  i=0; while [ $i -lt ${STORM_PER_SECOND / 10 / STORM_WORKERS} ]; do /bin/true; i=$((i+1)); done; n=$((n+i)); slot=$((slot+1))`,
  "  read up x < /proc/uptime; now=${up%.*}${up#*.}; ahead=$((start + slot * 10 - now))",
  "  if [ $ahead -gt 0 ]; then /bin/usleep $((ahead * 10000)); n=$((n+1)); fi",
  "done; echo execs=$n",
].join("\n");

async function startIdle(eng: TestEngine): Promise<string[]> {
  let started = 0;
  return mapLimit(
    Array.from({ length: CONTAINERS }, (_, i) => i),
    5,
    async () => {
      const c = await withTimeout(runContainer(eng.docker, eng.base, ["/bin/sh", "-c", IDLE]), 60_000, "starting a container");
      if (++started % 10 === 0) say(`started ${started}/${CONTAINERS}`);
      return c.id;
    },
  );
}

function countProcs(ids: readonly string[]): number {
  let n = 0;
  for (const id of ids) {
    const len = rawRead(`/sys/fs/cgroup/pids/docker/${id}/cgroup.procs`);
    if (len > 0) n += buf.toString("latin1", 0, len).trim().split("\n").length;
  }
  return n;
}

/** Part 1: full pass vs. read-only baseline, in this process. */
async function perPass(eng: TestEngine, ids: readonly string[]): Promise<{ us: number; baseline: number; processes: number; gatedUs: number }> {
  const metrics = new AgentMetrics();
  const cgroups = new CgroupSampler();
  const table = new ProcessTable("/proc", cgroups);
  const collector = new LdgCollector({ docker: eng.docker, node: "bench", procRoot: "/proc", dockerRoot: eng.info.rootDir, log: silentLogger(), metrics, processes: table });
  await collector.refreshAll();
  const tel = new Telemetry({ node: "bench", procRoot: "/proc", collector, processes: table, log: silentLogger(), metrics, execSource: "proc", windowMs: 3_600_000 });
  const ours = collector.running().filter((r) => ids.includes(r.id));
  if (ours.length !== CONTAINERS) throw new Error(`collector sees ${ours.length} of our ${CONTAINERS} containers`);
  tel.tick(new Date(), true); // first look: identities, attribution, maps
  const processes = ours.reduce((n, r) => n + table.current(r.id).length, 0);

  // The files a full pass reads, listed now so listing is not timed.
  const proc = new ProcSampler("/proc");
  const net = new NetSampler();
  const files: string[] = [];
  const dirs: string[] = [];
  const netns = new Set<number>();
  for (const r of collector.running()) {
    const paths = table.paths(r.id, r.pid);
    if (paths !== undefined) {
      const procs = cgroups.procsFile(paths);
      if (procs !== undefined) files.push(procs);
      const cpu = cpuUsageFile(paths);
      if (cpu !== undefined) files.push(cpu);
      files.push(...cgroups.files(paths));
    }
    const ns = net.netnsOf(r.pid);
    if (ns !== undefined && !netns.has(ns)) {
      netns.add(ns);
      files.push(...net.files(r.pid));
    }
    for (const t of table.current(r.id)) {
      files.push(...proc.files(t.info.pid));
      dirs.push(proc.fdDir(t.info.pid));
    }
  }
  files.push("/proc/uptime");
  const byStat = ProcSampler.fdCountByStat();
  const baselinePass = () => {
    for (const f of files) rawRead(f);
    for (const d of dirs) {
      try {
        // The fd count the agent takes: one stat (Linux 6.2+) or a directory listing.
        if (byStat) statSync(d);
        else readdirSync(d);
      } catch {
        // vanished
      }
    }
  };
  const full: number[] = [];
  const base: number[] = [];
  const gated: number[] = [];
  for (let i = 0; i < PASSES; i++) {
    // Interleaved, so both see the same machine.
    let t = cpuMicros();
    tel.tick(new Date(), true);
    full.push(cpuMicros() - t);
    t = cpuMicros();
    baselinePass();
    base.push(cpuMicros() - t);
    t = cpuMicros();
    tel.tick(new Date(), false);
    gated.push(cpuMicros() - t);
  }
  await tel.stop();
  say(`full pass CPU us: ${full.join(" ")}; baseline: ${base.join(" ")}; gated (idle) pass: ${gated.join(" ")}`);
  return { us: median(full), baseline: median(base), processes, gatedUs: median(gated) };
}

/** Sum of the exec counts in the windows of one container at the aggregator. */
async function execsSeen(agg: RunningAggregator, id: string): Promise<number> {
  const ws = await agg.telemetry.windows({ containerId: id }, 100_000);
  let n = 0;
  for (const s of ws) for (const l of s.window?.layers ?? []) n += l.execs;
  return n;
}

async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function bpftraceChildren(parent: number): number[] {
  const out: number[] = [];
  for (const n of readdirSync("/proc")) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const st = readFileSync(`/proc/${n}/stat`, "utf8");
      const rest = st.slice(st.lastIndexOf(")") + 2).split(" ");
      if (Number(rest[1]) === parent && st.includes("(bpftrace)")) out.push(Number(n));
    } catch {
      // gone
    }
  }
  return out;
}

async function agentRun(eng: TestEngine, dir: string): Promise<Record<string, number | boolean>> {
  const agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
  const httpPort = 19000 + (process.pid % 500);
  let child: ChildProcess | undefined;
  try {
    child = spawn(
      process.execPath,
      [join(PACKAGE_ROOT, "dist/cli/main.js"), "agent", "--insecure", "--node", "bench-node", "--aggregator", `127.0.0.1:${agg.port}`, "--data-dir", join(dir, "agent"), "--http", `127.0.0.1:${httpPort}`, "--sample-ms", "1000", "--window", "10"],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const pid = child.pid ?? 0;
    await waitFor("agent metrics endpoint", async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.ok).catch(() => false)) || undefined, 60_000, 250).catch((err: unknown) => {
      throw new Error(`${String(err)}; agent stderr: ${stderr}`);
    });
    const m0 = await scrape(httpPort);
    const ebpf = (m0.get('shadowlayer_agent_exec_source{source="ebpf"}') ?? 0) === 1;
    say(`agent up (pid ${pid}, exec source ${ebpf ? "ebpf" : "proc-poll"}); warming up 12 s (first full pass, first window)`);
    await new Promise((r) => setTimeout(r, 12_000));
    const bpf = bpftraceChildren(pid);
    const a0 = procCpuMicros(pid);
    const b0 = bpf.reduce((n, p) => n + procCpuMicros(p), 0);
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, AGENT_SECONDS * 1000));
    const cpuPct = ((procCpuMicros(pid) - a0) / ((Date.now() - t0) * 1000)) * 100;
    const bpfPct = ((bpf.reduce((n, p) => n + procCpuMicros(p), 0) - b0) / ((Date.now() - t0) * 1000)) * 100;
    const rss = rssMb(pid);
    say(`agent at 1 Hz: ${cpuPct.toFixed(2)}% of one core, RSS ${rss.toFixed(1)} MB (bpftrace ${bpfPct.toFixed(2)}%)`);

    // The storm.
    const before = await scrape(httpPort);
    // Exactly 2 + STORM_WORKERS execs besides the workers' own: the entrypoint, /bin/sleep, the worker shells.
    const workers = Array.from({ length: STORM_WORKERS }, (_, i) => i + 1).join(" ");
    const cmd = `/bin/sleep 2; for w in ${workers}; do /bin/sh -c '${STORM_WORKER}' & done; wait`;
    const storm = await runContainer(eng.docker, eng.base, ["/bin/sh", "-c", cmd]);
    const t1 = Date.now();
    await waitFor("storm finished", async () => ((await storm.inspect()).State.Running ? undefined : true), (STORM_SECONDS + 60) * 1000, 250);
    const stormSeconds = (Date.now() - t1) / 1000 - 2;
    const logs = (await storm.logs({ stdout: true, stderr: true })).toString("latin1");
    const done = [...logs.matchAll(/execs=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
    const expected = done + 2 + STORM_WORKERS;
    const seen = await waitFor(
      "storm windows at the aggregator",
      async () => {
        const n = await execsSeen(agg, storm.id);
        return n >= expected ? n : undefined;
      },
      30_000,
      500,
    ).catch(async () => execsSeen(agg, storm.id));
    const after = await scrape(httpPort);
    const lostKernel = (after.get("shadowlayer_agent_exec_events_lost_total") ?? 0) - (before.get("shadowlayer_agent_exec_events_lost_total") ?? 0);
    say(`storm: ${done} execs by the workers in ${stormSeconds.toFixed(1)} s (+${expected - done} shells), ${seen} attributed to the container, kernel lost ${lostKernel}`);
    return {
      agent_cpu_pct_at_1hz: round3(cpuPct),
      bpftrace_cpu_pct: round3(bpfPct),
      rss_mb: round3(rss),
      ebpf,
      exec_events_per_s: round3(seen / stormSeconds),
      storm_target_per_s: STORM_PER_SECOND,
      exec_events_lost: Math.max(0, expected - seen) + lostKernel,
      storm_execs: expected,
    };
  } finally {
    child?.kill("SIGTERM");
    await agg.stop();
  }
}

async function main(): Promise<number> {
  let docker: Docker | undefined;
  const dir = mkdtempSync(join(tmpdir(), "sl-bench-sampling-"));
  try {
    const eng = await withTimeout(testEngine(), 10 * 60_000, "testEngine()");
    docker = eng.docker;
    say(`starting ${CONTAINERS} containers x ${PROCS_PER_CONTAINER} idle processes`);
    const ids = await startIdle(eng);
    await waitFor("all processes up", () => (countProcs(ids) >= CONTAINERS * PROCS_PER_CONTAINER ? true : undefined), 60_000, 250);
    const pass = await perPass(eng, ids);
    const agent = await agentRun(eng, dir);
    const result = {
      processes: pass.processes,
      us_per_process: round3(pass.us / pass.processes),
      baseline_us_per_process: round3(pass.baseline / pass.processes),
      ratio: round3(pass.us / pass.baseline),
      ...agent,
      gated_pass_us: round3(pass.gatedUs),
      full_pass_ms: round3(pass.us / 1000),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (err) {
    say(`FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 1;
  } finally {
    if (docker !== undefined) {
      say("removing the containers ...");
      await withTimeout(cleanupContainers(docker), 120_000, "cleanup").catch((err: unknown) => say(`cleanup failed: ${String(err)}`));
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  say(`FAILED: the whole benchmark exceeded ${OVERALL_TIMEOUT_MS} ms`);
  process.exit(2);
}, OVERALL_TIMEOUT_MS);
watchdog.unref();
process.exitCode = await main();
clearTimeout(watchdog);
process.exit(process.exitCode);
