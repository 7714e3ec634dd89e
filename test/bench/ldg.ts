/**
 * LDG benchmark: the cost of building every container's Layer Dependency Graph on a real engine.
 *
 * Starts 50 containers (half with one process, half with two), then times LdgCollector.refreshAll()
 * cold (a new collector each round, so no caches) and warm (the same collector again). Each pass
 * includes one listContainers call and one /proc scan, as the agent's own pass does.
 *
 * Progress goes to stderr; the last stdout line is one JSON object with the results.
 * Run with `npm run bench:ldg`.
 */
import type Docker from "dockerode";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { silentLogger } from "../../common/log.js";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { cleanupContainers, runContainer, testEngine, type TestEngine } from "../harness/engine.js";
import { withTimeout } from "../../common/timeout.js";
import { mapLimit, median, round3 } from "./common.js";

const CONTAINERS = 50;
const PARALLEL = 5;
const COLD_ROUNDS = 3;
const WARM_ROUNDS = 10;
/** Whole run, including building the demo images on first use. */
const OVERALL_TIMEOUT_MS = 15 * 60_000;
const ENGINE_TIMEOUT_MS = 10 * 60_000;
const START_TIMEOUT_MS = 60_000;
const REFRESH_TIMEOUT_MS = 120_000;
const CLEANUP_TIMEOUT_MS = 120_000;

const CMDS: string[][] = [
  ["/opt/app/bin/busybox", "sleep", "600"],
  ["/bin/sh", "-c", "/bin/sleep 600 & exec /opt/app/bin/busybox sleep 600"],
];

function say(msg: string): void {
  process.stderr.write(`[bench:ldg] ${msg}\n`);
}


async function startContainers(eng: TestEngine): Promise<string[]> {
  let started = 0;
  const ids = await mapLimit(
    Array.from({ length: CONTAINERS }, (_, i) => i),
    PARALLEL,
    async (i) => {
      const c = await withTimeout(runContainer(eng.docker, eng.app, CMDS[i % CMDS.length]!), START_TIMEOUT_MS, `starting container ${i + 1}`);
      started++;
      if (started % 10 === 0 || started === CONTAINERS) say(`started ${started}/${CONTAINERS} ...`);
      return c.id;
    },
  );
  return ids;
}

function newCollector(eng: TestEngine): LdgCollector {
  return new LdgCollector({
    docker: eng.docker,
    node: "bench",
    procRoot: "/proc",
    dockerRoot: eng.info.rootDir,
    log: silentLogger(),
    metrics: new AgentMetrics(),
  });
}

/** Times one refreshAll() in milliseconds. */
async function timeRefresh(collector: LdgCollector, what: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  await withTimeout(collector.refreshAll(), REFRESH_TIMEOUT_MS, what);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Throws unless the collector holds >= CONTAINERS graphs covering every started container. */
function verify(graphs: readonly LayerGraph[], ids: readonly string[], what: string): void {
  if (graphs.length < CONTAINERS) throw new Error(`${what}: only ${graphs.length} graphs, expected >= ${CONTAINERS}`);
  const have = new Set(graphs.map((g) => g.containerId));
  const missing = ids.filter((id) => !have.has(id));
  if (missing.length > 0) throw new Error(`${what}: ${missing.length} started containers have no graph: ${missing.map((id) => id.slice(0, 12)).join(", ")}`);
}

/** Processes attributed in our containers' graphs (each process appears under one layer). */
function processCount(graphs: readonly LayerGraph[], ids: ReadonlySet<string>): number {
  let n = 0;
  for (const g of graphs) if (ids.has(g.containerId)) for (const l of g.layers) n += l.processes.length;
  return n;
}

async function bench(eng: TestEngine): Promise<Record<string, number | string>> {
  say(`engine ${eng.info.version} (${eng.info.driver}, root ${eng.info.rootDir}); starting ${CONTAINERS} containers, ${PARALLEL} at a time`);
  const ids = await startContainers(eng);
  const idSet = new Set(ids);

  const cold: number[] = [];
  const coldGraphs: number[] = [];
  let collector: LdgCollector | undefined;
  for (let r = 1; r <= COLD_ROUNDS; r++) {
    collector = newCollector(eng);
    const ms = await timeRefresh(collector, `cold refreshAll round ${r}`);
    const graphs = collector.current();
    verify(graphs, ids, `cold round ${r}`);
    cold.push(ms);
    coldGraphs.push(graphs.length);
    say(`cold round ${r}/${COLD_ROUNDS}: ${ms.toFixed(1)} ms for ${graphs.length} graphs (${(ms / graphs.length).toFixed(3)} ms/graph), ${processCount(graphs, idSet)} processes in ours`);
  }
  if (collector === undefined) throw new Error("no cold round ran");

  const warm: number[] = [];
  const warmGraphs: number[] = [];
  for (let r = 1; r <= WARM_ROUNDS; r++) {
    const ms = await timeRefresh(collector, `warm refreshAll round ${r}`);
    const graphs = collector.current();
    verify(graphs, ids, `warm round ${r}`);
    warm.push(ms);
    warmGraphs.push(graphs.length);
  }
  say(`warm rounds (ms): ${warm.map((x) => x.toFixed(1)).join(" ")}`);

  const coldMs = median(cold);
  const warmMs = median(warm);
  // Graphs built per pass; every pass rebuilds every listed container.
  const graphs = coldGraphs[cold.indexOf(coldMs)] ?? median(coldGraphs);
  const warmN = warmGraphs[warm.indexOf(warmMs)] ?? median(warmGraphs);
  const final = collector.current();
  return {
    containers: CONTAINERS,
    cold_ms_per_container: round3(coldMs / graphs),
    warm_ms_per_container: round3(warmMs / warmN),
    cold_ms_total: round3(coldMs),
    warm_ms_total: round3(warmMs),
    graphs,
    processes: processCount(final, idSet),
    cold_rounds: COLD_ROUNDS,
    warm_rounds: WARM_ROUNDS,
    engine: eng.info.version,
  };
}

async function main(): Promise<number> {
  let eng: TestEngine | undefined;
  let docker: Docker | undefined;
  try {
    say("connecting to the engine (builds the demo images if needed) ...");
    eng = await withTimeout(testEngine(), ENGINE_TIMEOUT_MS, "testEngine()");
    docker = eng.docker;
    const result = await bench(eng);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (err) {
    say(`FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 1;
  } finally {
    if (docker !== undefined) {
      say("removing the containers ...");
      await withTimeout(cleanupContainers(docker), CLEANUP_TIMEOUT_MS, "cleanupContainers").catch((err: unknown) =>
        say(`cleanup failed: ${String(err)}`),
      );
    }
  }
}

const watchdog = setTimeout(() => {
  say(`FAILED: the whole benchmark exceeded ${OVERALL_TIMEOUT_MS} ms`);
  setTimeout(() => process.exit(2), 35_000).unref();
  // Best effort: containers carry the test label with this pid; remove them before exiting.
  void testEngine()
    .then((e) => withTimeout(cleanupContainers(e.docker), 30_000, "cleanupContainers"))
    .catch(() => undefined)
    .finally(() => process.exit(2));
}, OVERALL_TIMEOUT_MS);
watchdog.unref();

// Exit explicitly: dockerode's keep-alive agent or stray timers must not keep the process up.
process.exit(await main());
