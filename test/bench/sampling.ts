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
 * 3. Two bounded exec storms in one container each, counted from inside the container (see
 *    exec-storm.ts): one paced at 1,000 execs/s for 10 s, one as fast as this machine forks.
 *    For each: the rate reached, and the execs the agent did not attribute to that container
 *    (from its windows at the aggregator), plus the kernel's lost-event count.
 * 4. Churn: the agent and the aggregator as two separate `shadowlayer` processes while a busybox
 *    httpd forks a process per connection at 200 connections/s (a bounded loopback client) for
 *    70 s, the 50 idle containers still running; the CPU of each over the last 60 s of it, and
 *    over 20 s just before it (the same processes, no churn) to tell the churn's share.
 *
 * Progress goes to stderr; the last stdout line is one JSON object (with the 1-minute load
 * average at the start and end, as the machine may be shared). Run with `npm run bench:sampling`.
 */
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
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
import { withTimeout } from "../../common/timeout.js";
import { cleanupContainers, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";
import { scrape, startAgentProcess, startAggregatorProcess, stopAllCliProcesses, type AggregatorProcess, type CliProcess } from "./cli-process.js";
import { mapLimit, median, round3 } from "./common.js";
import { runStorm, type StormPlan } from "./exec-storm.js";
import { driveLoad, startForkingService } from "./forking-service.js";
import { childrenNamed, cpuMeter, rssMb } from "./proc-figures.js";

const CONTAINERS = 50;
const PROCS_PER_CONTAINER = 20;
const PASSES = 10;
const AGENT_SECONDS = 30;
const STORM_WORKERS = 4;
const STORM_SECONDS = 10;
const STORM_PER_SECOND = 1000;
const CHURN_PER_SECOND = 200;
/** The churn runs this long; CPU is measured over all but its first CHURN_RAMP_SECONDS. */
const CHURN_SECONDS = 70;
const CHURN_RAMP_SECONDS = 10;
/** The same two processes measured just before the churn, so the churn's own share shows. */
const BEFORE_CHURN_SECONDS = 20;
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

const IDLE = `for i in $(seq ${PROCS_PER_CONTAINER - 1}); do sleep 3600 & done; wait`;

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

interface StormFigures {
  /** Execs per second that happened in the container. */
  rate: number;
  execs: number;
  /** Execs that happened and that the agent did not attribute to the container. */
  lost: number;
  /** Events the kernel dropped during the storm (any container). */
  kernelLost: number;
}

/** One storm against the running agent, counted in the container and at the aggregator. */
async function storm(eng: TestEngine, agg: RunningAggregator, httpPort: number, plan: StormPlan, label: string): Promise<StormFigures> {
  const lost = async () => (await scrape(httpPort)).get("shadowlayer_agent_exec_events_lost_total") ?? 0;
  const lost0 = await lost();
  const r = await runStorm(eng, plan);
  const seen = await waitFor(
    `${label} storm windows at the aggregator`,
    async () => {
      const n = await execsSeen(agg, r.container.id);
      return n >= r.execs ? n : undefined;
    },
    30_000,
    500,
  ).catch(async () => execsSeen(agg, r.container.id));
  const kernelLost = (await lost()) - lost0;
  const rate = r.workerExecs / r.seconds;
  say(`${label} storm: ${r.execs} execs in ${r.seconds.toFixed(2)} s (${rate.toFixed(0)}/s), ${seen} attributed to the container, kernel lost ${kernelLost}; load ${loadavg()[0]!.toFixed(2)}`);
  return { rate, execs: r.execs, lost: Math.max(0, r.execs - seen), kernelLost };
}

async function agentRun(eng: TestEngine, dir: string): Promise<Record<string, number | boolean>> {
  const agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
  let agent: CliProcess | undefined;
  try {
    agent = await startAgentProcess(join(dir, "agent"), "bench-node", agg.port);
    const m0 = await scrape(agent.httpPort);
    const ebpf = (m0.get('shadowlayer_agent_exec_source{source="ebpf"}') ?? 0) === 1;
    say(`agent up (pid ${agent.pid}, exec source ${ebpf ? "ebpf" : "proc-poll"}); warming up 12 s (first full pass, first window)`);
    await new Promise((r) => setTimeout(r, 12_000));
    const agentCpu = cpuMeter([agent.pid]);
    const bpfCpu = cpuMeter(childrenNamed(agent.pid, "bpftrace"));
    await new Promise((r) => setTimeout(r, AGENT_SECONDS * 1000));
    const cpuPct = agentCpu();
    const bpfPct = bpfCpu();
    const rss = rssMb(agent.pid);
    say(`agent at 1 Hz: ${cpuPct.toFixed(2)}% of one core, RSS ${rss.toFixed(1)} MB (bpftrace ${bpfPct.toFixed(2)}%); load ${loadavg()[0]!.toFixed(2)}`);

    const paced = await storm(eng, agg, agent.httpPort, { workers: STORM_WORKERS, perSecond: STORM_PER_SECOND, seconds: STORM_SECONDS }, `paced (${STORM_PER_SECOND}/s)`);
    const maxWorkers = Math.max(2, availableParallelism());
    const max = await storm(eng, agg, agent.httpPort, { workers: maxWorkers, seconds: STORM_SECONDS }, `unpaced (${maxWorkers} workers)`);
    return {
      agent_cpu_pct_at_1hz: round3(cpuPct),
      bpftrace_cpu_pct: round3(bpfPct),
      rss_mb: round3(rss),
      ebpf,
      exec_events_per_s: round3(paced.rate),
      storm_target_per_s: STORM_PER_SECOND,
      exec_events_lost: paced.lost,
      storm_execs: paced.execs,
      exec_rate_paced: round3(paced.rate),
      exec_lost_paced: paced.lost,
      exec_kernel_lost_paced: paced.kernelLost,
      exec_rate_max: round3(max.rate),
      exec_lost_max: max.lost,
      exec_kernel_lost_max: max.kernelLost,
      storm_execs_max: max.execs,
    };
  } finally {
    await agent?.stop();
    await agg.stop();
  }
}

/**
 * Rows in the host's TCP tables (mostly TIME_WAIT after a churn): a host-network container's
 * network sample reads these whole tables, so their size is part of what the churn costs.
 */
function hostTcpSockets(): number {
  let n = 0;
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    try {
      n += readFileSync(f, "latin1").split("\n").length - 2;
    } catch {
      // no IPv6
    }
  }
  return n;
}

/** Part 4: the agent and the aggregator as separate processes under the forking service's churn. */
async function churnRun(eng: TestEngine, dir: string): Promise<Record<string, number>> {
  const service = await startForkingService(eng, CHURN_SECONDS + 180);
  let agg: AggregatorProcess | undefined;
  let agent: CliProcess | undefined;
  try {
    agg = await startAggregatorProcess(join(dir, "churn-agg"));
    agent = await startAgentProcess(join(dir, "churn-agent"), "bench-churn", agg.port);
    say(`churn: aggregator pid ${agg.pid}, agent pid ${agent.pid}, httpd on 127.0.0.1:${service.port}; warming up 12 s`);
    await new Promise((r) => setTimeout(r, 12_000));
    const agentQuiet = cpuMeter([agent.pid]);
    const aggQuiet = cpuMeter([agg.pid]);
    await new Promise((r) => setTimeout(r, BEFORE_CHURN_SECONDS * 1000));
    const agentBefore = agentQuiet();
    const aggBefore = aggQuiet();
    const load = driveLoad(service.port, CHURN_PER_SECOND, CHURN_SECONDS);
    await new Promise((r) => setTimeout(r, CHURN_RAMP_SECONDS * 1000));
    const agentCpu = cpuMeter([agent.pid]);
    const aggCpu = cpuMeter([agg.pid]);
    const bpfCpu = cpuMeter(childrenNamed(agent.pid, "bpftrace"));
    const done = await load;
    const agentPct = agentCpu();
    const aggPct = aggCpu();
    const bpfPct = bpfCpu();
    const hostTcp = hostTcpSockets();
    const agentRss = rssMb(agent.pid);
    const aggRss = rssMb(agg.pid);
    const perSecond = done.ok / done.seconds;
    say(
      `churn: ${done.ok} connections (${perSecond.toFixed(1)} new processes/s, ${done.failed} failed); agent ${agentPct.toFixed(2)}% (RSS ${agentRss.toFixed(1)} MB), ` +
        `aggregator ${aggPct.toFixed(2)}% (RSS ${aggRss.toFixed(1)} MB), bpftrace ${bpfPct.toFixed(2)}% (before the churn: agent ${agentBefore.toFixed(2)}%, ` +
        `aggregator ${aggBefore.toFixed(2)}%); ${hostTcp} host TCP sockets; load ${loadavg()[0]!.toFixed(2)}`,
    );
    return {
      agent_cpu_pct_churn: round3(agentPct),
      aggregator_cpu_pct_churn: round3(aggPct),
      bpftrace_cpu_pct_churn: round3(bpfPct),
      agent_cpu_pct_before_churn: round3(agentBefore),
      aggregator_cpu_pct_before_churn: round3(aggBefore),
      host_tcp_sockets_churn: hostTcp,
      churn_target_per_s: CHURN_PER_SECOND,
      churn_procs_per_s: round3(perSecond),
      churn_failed: done.failed,
      agent_rss_mb_churn: round3(agentRss),
      aggregator_rss_mb_churn: round3(aggRss),
    };
  } catch (err) {
    if (agent !== undefined) say(`agent stderr: ${agent.stderrTail()}`);
    if (agg !== undefined) say(`aggregator stderr: ${agg.stderrTail()}`);
    throw err;
  } finally {
    await agent?.stop();
    await agg?.stop();
  }
}

async function main(): Promise<number> {
  let docker: Docker | undefined;
  const dir = mkdtempSync(join(tmpdir(), "sl-bench-sampling-"));
  try {
    const load1Start = loadavg()[0]!;
    const eng = await withTimeout(testEngine(), 10 * 60_000, "testEngine()");
    docker = eng.docker;
    say(`starting ${CONTAINERS} containers x ${PROCS_PER_CONTAINER} idle processes`);
    const ids = await startIdle(eng);
    await waitFor("all processes up", () => (countProcs(ids) >= CONTAINERS * PROCS_PER_CONTAINER ? true : undefined), 60_000, 250);
    const pass = await perPass(eng, ids);
    const agent = await agentRun(eng, dir);
    const churn = await churnRun(eng, dir);
    const result = {
      processes: pass.processes,
      us_per_process: round3(pass.us / pass.processes),
      baseline_us_per_process: round3(pass.baseline / pass.processes),
      ratio: round3(pass.us / pass.baseline),
      ...agent,
      gated_pass_us: round3(pass.gatedUs),
      full_pass_ms: round3(pass.us / 1000),
      ...churn,
      load1_start: round3(load1Start),
      load1_end: round3(loadavg()[0]!),
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

/** For an interrupted or overrun run: what main()'s own cleanup would have done, then exit. */
function abandon(why: string, code: number): void {
  say(`${why}: stopping the agent and the aggregator, removing the containers ...`);
  void (async () => {
    await stopAllCliProcesses();
    const eng = await testEngine();
    await withTimeout(cleanupContainers(eng.docker), 120_000, "cleanup").catch((err: unknown) => say(`cleanup failed: ${String(err)}`));
    process.exit(code);
  })();
}
process.once("SIGINT", () => abandon("SIGINT", 130));
const watchdog = setTimeout(() => abandon(`FAILED: the whole benchmark exceeded ${OVERALL_TIMEOUT_MS} ms`, 2), OVERALL_TIMEOUT_MS);
watchdog.unref();
process.exitCode = await main();
clearTimeout(watchdog);
process.exit(process.exitCode);
