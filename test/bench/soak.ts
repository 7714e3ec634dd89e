/**
 * Soak benchmark (issue: hardening, cost stays bounded). The agent and the aggregator run as two
 * separate `shadowlayer` processes (no feed loaded) for SL_SOAK_MINUTES (default 30) while the node
 * carries 50 small busybox containers (each runs /bin/sleep 10 in a loop, so windows carry execs),
 * the forking service under a bounded loopback client (200 new processes/s), and `shadowlayer demo`.
 * The RSS of each is sampled every minute; the first minute is warm-up, so "start" is the sample
 * taken after it and "end" the last one.
 *
 * Targets: end <= start x 1.1 for each, and the aggregator <= 250 MB at every sample. The last
 * stdout line is one JSON object starting with
 * `{"minutes":…,"agent_rss_mb_start":…,"agent_rss_mb_end":…,"aggregator_rss_mb_start":…,"aggregator_rss_mb_end":…`;
 * the exit code is 1 when a target is missed, 2 on a failure. Every container it started (the
 * demo's too) is removed at the end, on a failure, and on SIGINT/SIGTERM. Progress goes to stderr.
 * Run with `npm run bench:soak`.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { DEMO_LABEL } from "../../cli/demo-images.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { withTimeout } from "../../common/timeout.js";
import { cleanupContainers, runContainer, testEngine, type TestEngine } from "../harness/engine.js";
import { freePort, scrape, startAgentProcess, startAggregatorProcess, type AggregatorProcess, type CliProcess } from "./cli-process.js";
import { mapLimit, round3 } from "./common.js";
import { driveLoad, startForkingService, type LoadResult } from "./forking-service.js";
import { cpuMeter, rssMb } from "./proc-figures.js";

const CONTAINERS = 50;
const CHURN_PER_SECOND = 200;
const GROWTH_LIMIT = 1.1;
const AGGREGATOR_RSS_LIMIT_MB = 250;
const DEMO_VOLUME = "shadowlayer-demo-data";

function say(msg: string): void {
  process.stderr.write(`[bench:soak] ${msg}\n`);
}

function soakMinutes(): number {
  const raw = process.env["SL_SOAK_MINUTES"] ?? "30";
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 2) throw new Error(`SL_SOAK_MINUTES must be a whole number of minutes, at least 2 (one is warm-up); got ${JSON.stringify(raw)}`);
  return n;
}

/** Sleeps `ms`, or less if `signal` aborts; its abort listener goes with it (one per minute would pile up). */
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });

interface Sample {
  minute: number;
  agent: number;
  aggregator: number;
}

/** Everything the soak started, so one idempotent cleanup can undo it from any point. */
class Started {
  eng: TestEngine | undefined;
  agent: CliProcess | undefined;
  aggregator: AggregatorProcess | undefined;
  demoIds: string[] = [];
  demoVolumeWasThere = true;
  readonly abort = new AbortController();
  private cleaning: Promise<void> | undefined;

  constructor(readonly dir: string) {}

  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      this.abort.abort();
      await this.agent?.stop().catch(() => undefined);
      await this.aggregator?.stop().catch(() => undefined);
      const docker = this.eng?.docker;
      if (docker !== undefined) {
        say("removing the containers ...");
        await withTimeout(
          Promise.all([cleanupContainers(docker), ...this.demoIds.map((id) => docker.getContainer(id).remove({ force: true, v: true }).catch(() => undefined))]),
          120_000,
          "cleanup",
        ).catch((err: unknown) => say(`cleanup failed: ${String(err)}`));
        if (!this.demoVolumeWasThere) await docker.getVolume(DEMO_VOLUME).remove().catch(() => undefined);
      }
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.cleaning;
  }
}

/** Starts `shadowlayer demo` as a user would; remembers the containers it printed. */
async function startDemo(s: Started, eng: TestEngine): Promise<void> {
  const existing = await eng.docker.listContainers({ all: true, filters: { label: [`${DEMO_LABEL}=demo`] } });
  if (existing.length > 0) throw new Error(`demo containers already exist (${existing.map((c) => c.Names.join(",")).join(" ")}); the demo would replace them: remove them first (shadowlayer demo --down)`);
  s.demoVolumeWasThere = await eng.docker
    .getVolume(DEMO_VOLUME)
    .inspect()
    .then(() => true)
    .catch(() => false);
  const port = await freePort();
  const out = await promisify(execFile)(process.execPath, [join(PACKAGE_ROOT, "dist/cli/main.js"), "demo", "--port", String(port)], { timeout: 120_000 }).catch(async (err: unknown) => {
    // It may have started some before failing: find them by label so cleanup removes them.
    const now = await eng.docker.listContainers({ all: true, filters: { label: [`${DEMO_LABEL}=demo`] } });
    s.demoIds.push(...now.map((c) => c.Id));
    throw err;
  });
  const short = [...out.stdout.matchAll(/^started \S+ \(([0-9a-f]{12})\)/gm)].map((m) => m[1]!);
  const all = await eng.docker.listContainers({ all: true, filters: { label: [`${DEMO_LABEL}=demo`] } });
  s.demoIds.push(...all.filter((c) => short.some((id) => c.Id.startsWith(id))).map((c) => c.Id));
  if (s.demoIds.length !== 3) throw new Error(`the demo printed ${short.length} containers, ${s.demoIds.length} found: ${out.stdout}`);
  say(`demo up: web server on 127.0.0.1:${port}, ${s.demoIds.length} containers`);
}

async function soak(s: Started, minutes: number): Promise<number> {
  const load1Start = loadavg()[0]!;
  const eng = await withTimeout(testEngine(), 10 * 60_000, "testEngine()");
  s.eng = eng;
  const lifeS = minutes * 60 + 600;
  say(`starting ${CONTAINERS} containers, the forking service and the demo`);
  const loop = `i=0; while [ $i -lt ${Math.ceil(lifeS / 10)} ]; do /bin/sleep 10; i=$((i+1)); done`;
  await mapLimit(
    Array.from({ length: CONTAINERS }, (_, i) => i),
    5,
    () => withTimeout(runContainer(eng.docker, eng.base, ["/bin/sh", "-c", loop]), 60_000, "starting a container"),
  );
  const service = await startForkingService(eng, lifeS);
  await startDemo(s, eng);

  s.aggregator = await startAggregatorProcess(join(s.dir, "aggregator"));
  s.agent = await startAgentProcess(join(s.dir, "agent"), "soak-node", s.aggregator.port);
  const agentPid = s.agent.pid;
  const aggPid = s.aggregator.pid;
  say(`aggregator pid ${aggPid}, agent pid ${agentPid}; ${minutes} minutes, the first one warm-up`);
  const load: Promise<LoadResult> = driveLoad(service.port, CHURN_PER_SECOND, minutes * 60 + 30, 64, s.abort.signal);

  const samples: Sample[] = [];
  const take = (minute: number) => {
    const x = { minute, agent: rssMb(agentPid), aggregator: rssMb(aggPid) };
    samples.push(x);
    say(`minute ${minute}: agent ${x.agent.toFixed(1)} MB, aggregator ${x.aggregator.toFixed(1)} MB; load ${loadavg()[0]!.toFixed(2)}`);
  };
  take(0);
  let agentCpu: (() => number) | undefined;
  let aggCpu: (() => number) | undefined;
  const t0 = Date.now();
  for (let m = 1; m <= minutes; m++) {
    await sleep(t0 + m * 60_000 - Date.now(), s.abort.signal);
    if (s.abort.signal.aborted) throw new Error("interrupted");
    take(m);
    if (m === 1) {
      agentCpu = cpuMeter([agentPid]);
      aggCpu = cpuMeter([aggPid]);
    }
  }
  const agentPct = agentCpu?.() ?? 0;
  const aggPct = aggCpu?.() ?? 0;
  const metrics = await scrape(s.agent.httpPort);
  s.abort.abort();
  const churn = await load;

  const start = samples[1]!;
  const end = samples[samples.length - 1]!;
  const aggMax = Math.max(...samples.map((x) => x.aggregator));
  const ok = end.agent <= start.agent * GROWTH_LIMIT && end.aggregator <= start.aggregator * GROWTH_LIMIT && aggMax <= AGGREGATOR_RSS_LIMIT_MB;
  const result = {
    minutes,
    agent_rss_mb_start: round3(start.agent),
    agent_rss_mb_end: round3(end.agent),
    aggregator_rss_mb_start: round3(start.aggregator),
    aggregator_rss_mb_end: round3(end.aggregator),
    agent_rss_mb_max: round3(Math.max(...samples.map((x) => x.agent))),
    aggregator_rss_mb_max: round3(aggMax),
    agent_cpu_pct: round3(agentPct),
    aggregator_cpu_pct: round3(aggPct),
    churn_procs_per_s: round3(churn.ok / churn.seconds),
    churn_failed: churn.failed,
    agent_reconnects: metrics.get("shadowlayer_agent_link_reconnects_total") ?? 0,
    agent_spool_dropped: metrics.get("shadowlayer_agent_spool_dropped_total") ?? 0,
    ok,
    load1_start: round3(load1Start),
    load1_end: round3(loadavg()[0]!),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return ok ? 0 : 1;
}

async function main(): Promise<number> {
  const minutes = soakMinutes();
  const s = new Started(mkdtempSync(join(tmpdir(), "sl-bench-soak-")));
  const onSignal = (sig: NodeJS.Signals) => {
    say(`${sig}: cleaning up`);
    void s.cleanup().then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  // The whole run, with room for images, 50 starts and cleanup.
  const watchdog = setTimeout(
    () => {
      say("FAILED: the soak overran its time");
      void s.cleanup().then(() => process.exit(2));
    },
    (minutes + 20) * 60_000,
  );
  watchdog.unref();
  try {
    return await soak(s, minutes);
  } catch (err) {
    if (s.abort.signal.aborted) return 130;
    say(`FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    if (s.agent !== undefined) say(`agent stderr: ${s.agent.stderrTail()}`);
    if (s.aggregator !== undefined) say(`aggregator stderr: ${s.aggregator.stderrTail()}`);
    return 2;
  } finally {
    clearTimeout(watchdog);
    await s.cleanup();
  }
}

process.exit(await main());
