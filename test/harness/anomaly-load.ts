/**
 * The anomaly benchmark's request load (test/bench/ANOMALY-BENCH.md): a bounded in-process HTTP
 * client whose pace changes over time, a slow sine plus random bursts, from a seeded generator so
 * a rerun makes the same schedule. Bounded three ways: a total request count, a deadline, and a
 * cap on requests in flight. Loopback only.
 */
import { connect } from "node:net";

import { seededRandom } from "../../models/random.js";

export { seededRandom };

export interface LoadPlan {
  /** Loopback ports of the web containers; each request goes to one, round robin. */
  ports: readonly number[];
  /** Requests per second (all ports together) at the sine's middle. */
  baseRate: number;
  /** The sine's amplitude, as a share of baseRate (0-1). */
  amplitude: number;
  /** The sine's period, s. */
  periodS: number;
  /** Chance per second that a burst starts. */
  burstPerS: number;
  /** A burst multiplies the rate by this for 2-5 s. */
  burstFactor: number;
  seed: number;
  /** Hard bounds. */
  maxRequests: number;
  maxInFlight: number;
}

export interface LoadFigures {
  sent: number;
  ok: number;
  failed: number;
  /** Ticks where the in-flight cap held requests back. */
  capped: number;
  bursts: number;
}

/** The paths requested, with their weights: the small page mostly, the 20 kB file sometimes. */
const PATHS = ["/index.html", "/index.html", "/index.html", "/big.bin"];

function request(port: number, path: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let head = "";
    const s = connect({ host: "127.0.0.1", port }, () => s.end(`GET ${path} HTTP/1.0\r\n\r\n`));
    s.setTimeout(timeoutMs, () => s.destroy());
    s.on("data", (d: Buffer) => {
      if (head.length < 16) head += d.toString("latin1");
    });
    s.on("error", () => undefined);
    s.on("close", () => resolve(head.startsWith("HTTP/1.") && head.slice(9, 12) === "200"));
  });
}

/** The running load: `stop()` ends it early and resolves with the figures once requests in flight settle. */
export interface RunningLoad {
  stop(): Promise<LoadFigures>;
  readonly figures: LoadFigures;
}

/** Starts the load; it ends by itself after `seconds` or `maxRequests`, whichever first. */
export function startLoad(plan: LoadPlan, seconds: number): RunningLoad {
  const rnd = seededRandom(plan.seed);
  const figures: LoadFigures = { sent: 0, ok: 0, failed: 0, capped: 0, bursts: 0 };
  const stepMs = 100;
  const t0 = Date.now();
  const deadline = t0 + seconds * 1000;
  let inFlight = 0;
  let owed = 0;
  let burstUntil = 0;
  let next = 0;
  const pending = new Set<Promise<void>>();
  let stopped = false;
  const timer = setInterval(() => {
    const now = Date.now();
    if (stopped || now >= deadline || figures.sent >= plan.maxRequests) {
      clearInterval(timer);
      stopped = true;
      return;
    }
    const t = (now - t0) / 1000;
    if (now >= burstUntil && rnd() < plan.burstPerS * (stepMs / 1000)) {
      burstUntil = now + 2000 + rnd() * 3000;
      figures.bursts++;
    }
    const rate = plan.baseRate * (1 + plan.amplitude * Math.sin((2 * Math.PI * t) / plan.periodS)) * (now < burstUntil ? plan.burstFactor : 1);
    owed += Math.max(0, rate) * (stepMs / 1000);
    while (owed >= 1 && figures.sent < plan.maxRequests) {
      if (inFlight >= plan.maxInFlight) {
        figures.capped++;
        owed = 0;
        break;
      }
      owed -= 1;
      const port = plan.ports[next++ % plan.ports.length]!;
      const path = PATHS[Math.floor(rnd() * PATHS.length)]!;
      inFlight++;
      figures.sent++;
      const p = request(port, path, 5_000).then((ok) => {
        inFlight--;
        if (ok) figures.ok++;
        else figures.failed++;
        pending.delete(p);
      });
      pending.add(p);
    }
  }, stepMs);
  return {
    figures,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await Promise.all([...pending]);
      return figures;
    },
  };
}
