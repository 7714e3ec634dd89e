/**
 * Synthetic layer windows for the model tests: a web-server-like layer whose features follow one
 * latent request load with noise (so the autoencoder has correlations to learn), and a way to shift
 * one metric as an injected anomaly would.
 */

import { FEATURE_COUNT, FEATURE_NAMES, METRICS, STATS } from "../../models/features.js";
import type { ModelInput } from "../../models/types.js";

import { seededRandom as seeded } from "../../models/random.js";

export { seeded };

function gauss(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

export const WINDOW_SECONDS = 10;

/**
 * `n` windows of 10 s; `shift` multiplies every statistic of one metric (e.g. cpu_seconds ×20).
 */
export function syntheticInputs(n: number, seed: number, shift?: { metric: string; factor: number }): ModelInput[] {
  const next = seeded(seed);
  const S = WINDOW_SECONDS;
  const out: ModelInput[] = [];
  for (let w = 0; w < n; w++) {
    const load = 0.5 + 1.5 * next();
    const v = new Array<number>(FEATURE_COUNT).fill(0);
    const set = (name: string, value: number): void => {
      v[FEATURE_NAMES.indexOf(name)] = value;
    };
    const counter = (metric: string, rate: number): void => {
      const r = Math.max(0, rate);
      set(`${metric}.sum`, r * S);
      set(`${metric}.mean`, r);
      set(`${metric}.max`, r * (1.4 + 0.3 * next()));
      set(`${metric}.rate`, r);
    };
    const gauge = (metric: string, level: number, growth: number): void => {
      set(`${metric}.sum`, level);
      set(`${metric}.mean`, level);
      set(`${metric}.max`, level * (1 + 0.02 * next()));
      set(`${metric}.rate`, growth);
    };
    counter("cpu_seconds", 0.05 * load * (1 + 0.1 * gauss(next)));
    gauge("rss_bytes", 20e6 * (1 + 0.01 * gauss(next)), 2000 * gauss(next));
    gauge("threads", 4, 0);
    gauge("open_fds", 10 + Math.round(2 * load), 0);
    counter("read_bytes", 5e4 * load * (1 + 0.1 * gauss(next)));
    counter("write_bytes", 2e4 * load * (1 + 0.1 * gauss(next)));
    counter("disk_read_bytes", 0);
    counter("disk_write_bytes", next() < 0.3 ? 4096 * load : 0);
    counter("ctx_switches_voluntary", 200 * load * (1 + 0.1 * gauss(next)));
    counter("ctx_switches_involuntary", 5 * load * (1 + 0.2 * gauss(next)));
    counter("minor_faults", 100 * load * (1 + 0.1 * gauss(next)));
    counter("major_faults", 0);
    set("process_count", 3);
    const starts = Math.round(2 * load * S * (1 + 0.1 * gauss(next)));
    set("process_starts", starts);
    set("exec_count", starts);
    set("new_connections", Math.round(10 * load * S * (1 + 0.1 * gauss(next))));
    set("drift_events", 0);
    set("listen_sockets", 0);
    if (shift) {
      const m = METRICS.find((x) => x.name === shift.metric);
      if (m) for (const s of STATS) set(`${m.name}.${s}`, v[FEATURE_NAMES.indexOf(`${m.name}.${s}`)]! * shift.factor);
      else set(shift.metric, v[FEATURE_NAMES.indexOf(shift.metric)]! * shift.factor);
    }
    out.push({ vector: v, seconds: S });
  }
  return out;
}
