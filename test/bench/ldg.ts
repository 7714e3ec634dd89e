/**
 * LDG benchmark: the cost of building every container's Layer Dependency Graph on a real engine.
 *
 * Starts 50 containers (half with one process, half with two), then times LdgCollector.refreshAll()
 * cold (a new collector each round, so no caches) and warm (the same collector again). Each pass
 * includes one listContainers call and one /proc scan, as the agent's own pass does.
 *
 * With `--runtime containerd` the same shape runs as 50 CRI pods (one container each, the same
 * commands) on the test containerd (test/harness/containerd.ts: its own instance, pods made over
 * CRI's gRPC API with host networking), read through ContainerdRuntime; the Docker shape is
 * measured in the same run first (and removed before the pods start, so both passes scan a /proc
 * of the same size), and the result line carries both with their ratio.
 *
 * Progress goes to stderr; the last stdout line is one JSON object with the results.
 * Run with `npm run bench:ldg` (Docker) or `npm run bench:ldg -- --runtime containerd`.
 */
import type Docker from "dockerode";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { silentLogger } from "../../common/log.js";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { cleanupContainers, runContainer, testEngine, type TestEngine } from "../harness/engine.js";
import { cleanupPods, runPod, testContainerd, type TestContainerd } from "../harness/containerd.js";
import { connectContainerd } from "../../agent/runtime/containerd/containerd-runtime.js";
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

/** Same pod shape, as the kubelet would make it: one pod per container. */
const POD_NAMESPACE = "bench-ldg";
/** Whole containerd part (pods, rounds, removal). */
const CONTAINERD_TIMEOUT_MS = 10 * 60_000;

function say(msg: string): void {
  process.stderr.write(`[bench:ldg] ${msg}\n`);
}

/** `--runtime docker|containerd` (also `--runtime=…`); docker when absent. */
function runtimeArg(argv: readonly string[]): "docker" | "containerd" {
  let v: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--runtime") v = argv[i + 1] ?? "";
    else if (a.startsWith("--runtime=")) v = a.slice("--runtime=".length);
  }
  if (v === undefined || v === "docker") return "docker";
  if (v === "containerd") return "containerd";
  throw new Error(`--runtime: expected docker or containerd, got "${v}"`);
}

/** One runtime's shape: how its containers start, and a fresh (cold) collector over it. */
interface Shape {
  what: string;
  version: string;
  start(): Promise<string[]>;
  collector(): Promise<{ collector: LdgCollector; close(): void }>;
}


async function startAll(what: string, one: (i: number) => Promise<string>): Promise<string[]> {
  let started = 0;
  const ids = await mapLimit(
    Array.from({ length: CONTAINERS }, (_, i) => i),
    PARALLEL,
    async (i) => {
      const id = await withTimeout(one(i), START_TIMEOUT_MS, `starting ${what} ${i + 1}`);
      started++;
      if (started % 10 === 0 || started === CONTAINERS) say(`started ${started}/${CONTAINERS} ${what}s ...`);
      return id;
    },
  );
  return ids;
}

function dockerShape(eng: TestEngine): Shape {
  return {
    what: "container",
    version: eng.info.version,
    start: () => startAll("container", async (i) => (await runContainer(eng.docker, eng.app, CMDS[i % CMDS.length]!)).id),
    collector: async () => ({ collector: newCollector(eng), close: () => undefined }),
  };
}

function containerdShape(ctd: TestContainerd, version: string): Shape {
  return {
    what: "pod",
    version,
    start: () =>
      startAll("pod", async (i) => {
        const cmd = CMDS[i % CMDS.length]!;
        return (await runPod({ name: `bench-${process.pid}-${i}`, namespace: POD_NAMESPACE, image: ctd.appImage, command: cmd })).containerId;
      }),
    // A new runtime per cold round too: its image, pod and snapshot caches start empty.
    collector: async () => {
      const runtime = await connectContainerd({ socket: ctd.socket, namespace: ctd.namespace });
      const collector = new LdgCollector({ runtime, node: "bench", procRoot: "/proc", log: silentLogger(), metrics: new AgentMetrics() });
      return { collector, close: () => runtime.close() };
    },
  };
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

async function bench(shape: Shape): Promise<Record<string, number | string>> {
  const ids = await shape.start();
  const idSet = new Set(ids);

  const cold: number[] = [];
  const coldGraphs: number[] = [];
  let collector: LdgCollector | undefined;
  let close = (): void => undefined;
  try {
    for (let r = 1; r <= COLD_ROUNDS; r++) {
      close();
      ({ collector, close } = await shape.collector());
      const ms = await timeRefresh(collector, `cold refreshAll round ${r}`);
      const graphs = collector.current();
      verify(graphs, ids, `cold round ${r}`);
      cold.push(ms);
      coldGraphs.push(graphs.length);
      say(`${shape.what}s: cold round ${r}/${COLD_ROUNDS}: ${ms.toFixed(1)} ms for ${graphs.length} graphs (${(ms / graphs.length).toFixed(3)} ms/graph), ${processCount(graphs, idSet)} processes in ours`);
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
    say(`${shape.what}s: warm rounds (ms): ${warm.map((x) => x.toFixed(1)).join(" ")}`);

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
      engine: shape.version,
    };
  } finally {
    close();
  }
}

async function main(): Promise<number> {
  let eng: TestEngine | undefined;
  let docker: Docker | undefined;
  let pods = false;
  try {
    const runtime = runtimeArg(process.argv.slice(2));
    say("connecting to the engine (builds the demo images if needed) ...");
    eng = await withTimeout(testEngine(), ENGINE_TIMEOUT_MS, "testEngine()");
    docker = eng.docker;
    say(`engine ${eng.info.version} (${eng.info.driver}, root ${eng.info.rootDir}); starting ${CONTAINERS} containers, ${PARALLEL} at a time`);
    const dockerResult = await bench(dockerShape(eng));
    if (runtime === "docker") {
      process.stdout.write(`${JSON.stringify({ ...dockerResult, runtime: "docker" })}\n`);
      return 0;
    }
    say(`docker: ${JSON.stringify(dockerResult)}`);
    // The pods' pass scans a /proc without the Docker containers, as the Docker pass had no pods.
    say("removing the Docker containers before the pods start ...");
    await withTimeout(cleanupContainers(eng.docker), CLEANUP_TIMEOUT_MS, "cleanupContainers");
    say("starting the test containerd and importing the images ...");
    const ctd = await withTimeout(testContainerd(), ENGINE_TIMEOUT_MS, "testContainerd()");
    const probe = await connectContainerd({ socket: ctd.socket, namespace: ctd.namespace });
    const version = probe.info.version;
    probe.close();
    say(`containerd ${version} (${probe.info.driver}, socket ${ctd.socket}); starting ${CONTAINERS} pods of one container, ${PARALLEL} at a time`);
    pods = true;
    const r = await withTimeout(bench(containerdShape(ctd, version)), CONTAINERD_TIMEOUT_MS, "the containerd pass");
    const ratio = (a: number | string | undefined, b: number | string | undefined): number => (typeof a === "number" && typeof b === "number" && b > 0 ? round3(a / b) : Number.NaN);
    process.stdout.write(
      `${JSON.stringify({
        ...r,
        runtime: "containerd",
        docker_cold_ms_per_container: dockerResult["cold_ms_per_container"],
        docker_warm_ms_per_container: dockerResult["warm_ms_per_container"],
        ratio_cold: ratio(r["cold_ms_per_container"], dockerResult["cold_ms_per_container"]),
        ratio_warm: ratio(r["warm_ms_per_container"], dockerResult["warm_ms_per_container"]),
        docker_engine: dockerResult["engine"],
      })}\n`,
    );
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
    if (pods) {
      say("removing the pods ...");
      await withTimeout(cleanupPods(), CLEANUP_TIMEOUT_MS, "cleanupPods").catch((err: unknown) => say(`pod cleanup failed: ${String(err)}`));
    }
  }
}

const watchdog = setTimeout(() => {
  say(`FAILED: the whole benchmark exceeded ${OVERALL_TIMEOUT_MS} ms`);
  setTimeout(() => process.exit(2), 35_000).unref();
  // Best effort: containers and pods carry the test label with this pid; remove them before exiting.
  void Promise.allSettled([
    testEngine().then((e) => withTimeout(cleanupContainers(e.docker), 30_000, "cleanupContainers")),
    withTimeout(cleanupPods(), 30_000, "cleanupPods"),
  ]).finally(() => process.exit(2));
}, OVERALL_TIMEOUT_MS);
watchdog.unref();

// Exit explicitly: dockerode's keep-alive agent or stray timers must not keep the process up.
process.exit(await main());
