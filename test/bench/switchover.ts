/**
 * `npm run bench:switchover`: a busybox httpd service whose every start serves its own token,
 * under a bounded loopback load (a few clients, one request per connection), replaced 20 times by
 * each of:
 *   shadowlayer     the agent's switchover to a pre-created, signed shadow, traffic through the
 *                   agent's proxy on the stable address (and a few rollbacks: rollback_p50_ms)
 *   docker_restart  `docker restart` of the container
 *   stop_run        `docker stop` + `docker run` of the other image
 *   swarm_update    `docker service update --image` of a one-replica swarm service
 * The peers serve directly on their stable address. Replacements alternate between scenarios
 * round by round (the order rotating), so each sees the same machine noise. Per scenario: p50 and
 * p99 of the time from the command to the first request served by the new start, failed
 * requests, and max_gap_ms (the longest time no request succeeded). One unmeasured warm-up
 * replacement of each comes first. Last stdout line: one JSON object.
 * SL_BENCH_SWITCHOVER_ROUNDS changes the number of replacements (default 20).
 */
import { availableParallelism, loadavg } from "node:os";
import { testEngine, type TestEngine } from "../harness/engine.js";
// Below the ephemeral range: the load's own connections never hold a service's port.
import { freePort } from "../harness/switchover-services.js";
import { quantile } from "./served-latency.js";
import { buildServiceImages, type ServiceImages } from "./switchover-images.js";
import { dockerRestart, stopRun, type Replaceable } from "./switchover-peers.js";
import { startShadowlayerService, type ShadowlayerService } from "./switchover-shadowlayer.js";
import { startSwarmService } from "./switchover-swarm.js";
import { measureWindow, type WindowFigures, type WindowOptions } from "./switchover-window.js";

const ROUNDS = Math.max(1, Number(process.env["SL_BENCH_SWITCHOVER_ROUNDS"] ?? 20) || 20);
/** Unmeasured replacements of every scenario first (the engine's and the agent's first-time costs). */
const WARMUP = 1;
/** A rollback after every this many switchovers. */
const ROLLBACK_EVERY = 5;
const WINDOW: WindowOptions = {
  // 4 clients, each at most one request per 10 ms: up to 400 requests/s, a new connection each.
  load: { clients: 4, paceMs: 10, timeoutMs: 3_000, maxRequests: 40_000, maxSeconds: 90 },
  leadMs: 150,
  tailMs: 150,
  newStartTimeoutMs: 60_000,
};

const say = (l: string) => process.stderr.write(`${l}\n`);
const r1 = (x: number) => Math.round(x * 10) / 10;

interface Figures {
  failed: number;
  p50_ms: number | null;
  p99_ms: number | null;
  max_gap_ms: number | null;
  replacements: number;
  /** Replacements whose new start did not serve within the window's bound. */
  never_served: number;
  requests: number;
  gap_p50_ms: number | null;
  command_p50_ms: number | null;
}

function figures(ws: readonly WindowFigures[]): Figures {
  const ms = ws.flatMap((w) => (w.ms !== undefined ? [w.ms] : []));
  const q = (xs: number[], p: number) => (xs.length > 0 ? r1(quantile(xs, p)) : null);
  return {
    failed: ws.reduce((n, w) => n + w.failed, 0),
    p50_ms: q(ms, 0.5),
    p99_ms: q(ms, 0.99),
    max_gap_ms: ws.length > 0 ? r1(Math.max(...ws.map((w) => w.gapMs))) : null,
    replacements: ws.length,
    never_served: ws.length - ms.length,
    requests: ws.reduce((n, w) => n + w.requests, 0),
    gap_p50_ms: q(ws.map((w) => w.gapMs), 0.5),
    command_p50_ms: q(ws.map((w) => w.commandMs), 0.5),
  };
}

const NOT_MEASURED = { failed: null, p50_ms: null, p99_ms: null, max_gap_ms: null };

async function main(): Promise<void> {
  const started = performance.now();
  const eng: TestEngine = await testEngine();
  const { docker } = eng;
  let images: ServiceImages | undefined;
  const scenarios: Replaceable[] = [];
  const errors: Record<string, string> = {};
  const windows: Record<string, WindowFigures[]> = {};
  const rollbacks: WindowFigures[] = [];
  let shadowlayer: ShadowlayerService | undefined;
  try {
    say("building the service images");
    images = await buildServiceImages(docker);
    const tags = images.tags;

    say("starting the scenarios' services");
    const add = async (name: string, start: () => Promise<Replaceable>) => {
      try {
        scenarios.push(await start());
        windows[name] = [];
      } catch (err) {
        errors[name] = err instanceof Error ? err.message : String(err);
        say(`${name}: cannot be measured: ${errors[name]}`);
      }
    };
    await add("shadowlayer", async () => {
      shadowlayer = await startShadowlayerService(docker, images?.ids ?? ["", ""], await freePort(), say);
      return shadowlayer;
    });
    await add("docker_restart", async () => dockerRestart(docker, tags[0], await freePort()));
    await add("stop_run", async () => stopRun(docker, tags, await freePort()));
    await add("swarm_update", async () => startSwarmService(docker, tags, await freePort(), await freePort(), say));

    for (let r = -WARMUP; r < ROUNDS; r++) {
      const round = r < 0 ? "warm-up" : `round ${r + 1}/${ROUNDS}`;
      // The order rotates each round: no scenario always runs right after another.
      const order = scenarios.map((_, i) => scenarios[(i + r + WARMUP) % scenarios.length]!);
      for (const s of order) {
        if (errors[s.name] !== undefined) continue;
        try {
          const w = await measureWindow(s.port, WINDOW, () => s.replace(), () => s.settle());
          if (r >= 0) windows[s.name]!.push(w);
          say(`${round} ${s.name}: first new reply ${w.ms === undefined ? "never" : `${r1(w.ms)} ms`}, command ${r1(w.commandMs)} ms, ${w.failed}/${w.requests} failed, longest gap ${r1(w.gapMs)} ms`);
        } catch (err) {
          errors[s.name] = `${round}: ${err instanceof Error ? err.message : String(err)}`;
          say(`${s.name}: stopped: ${errors[s.name]}`);
        }
      }
      const sl = shadowlayer;
      if (sl !== undefined && errors["shadowlayer"] === undefined && r >= 0 && (r + 1) % ROLLBACK_EVERY === 0) {
        try {
          const w = await measureWindow(sl.port, WINDOW, () => sl.rollback(), () => sl.settle());
          rollbacks.push(w);
          say(`${round} shadowlayer rollback: first reply of the original ${w.ms === undefined ? "never" : `${r1(w.ms)} ms`}, command ${r1(w.commandMs)} ms, ${w.failed}/${w.requests} failed, longest gap ${r1(w.gapMs)} ms`);
        } catch (err) {
          errors["rollback"] = `${round}: ${err instanceof Error ? err.message : String(err)}`;
          say(`rollback: ${errors["rollback"]}`);
        }
      }
    }

    const result = (name: string): Record<string, unknown> => {
      const ws = windows[name];
      const err = errors[name];
      if (ws === undefined || ws.length === 0) return name === "shadowlayer" ? { ...NOT_MEASURED, error: err ?? "not measured" } : { error: err ?? "not measured" };
      return { ...figures(ws), ...(err !== undefined ? { error: err } : {}) };
    };
    const rb = figures(rollbacks);
    // Where the switchover's time goes (the engine's container start is most of it), from the agent's own records.
    const steps = shadowlayer !== undefined && windows["shadowlayer"] !== undefined ? shadowlayer.stepMedians() : undefined;
    const out = {
      shadowlayer: result("shadowlayer"),
      docker_restart: result("docker_restart"),
      stop_run: result("stop_run"),
      swarm_update: result("swarm_update"),
      rollback_p50_ms: rollbacks.length > 0 ? rb.p50_ms : null,
      rollback: rollbacks.length > 0 ? { ...rb, ...(errors["rollback"] !== undefined ? { error: errors["rollback"] } : {}) } : { error: errors["rollback"] ?? "not measured" },
      load: { clients: WINDOW.load.clients, pace_ms: WINDOW.load.paceMs, request_timeout_ms: WINDOW.load.timeoutMs },
      rounds: ROUNDS,
      warmup_rounds: WARMUP,
      ...(steps !== undefined ? { shadowlayer_step_p50_ms: steps.switchover, rollback_step_p50_ms: steps.rollback } : {}),
      engine: eng.info.version,
      cpus: availableParallelism(),
      loadavg_1m_at_end: Math.round(loadavg()[0]! * 100) / 100,
      total_s: 0,
    };
    out.total_s = Math.round((performance.now() - started) / 100) / 10;
    console.log(JSON.stringify(out));
  } finally {
    say("cleaning up");
    for (const s of scenarios) await s.close().catch((err: unknown) => say(`cleanup of ${s.name}: ${String(err)}`));
    await images?.remove();
  }
}

await main();
