/**
 * Statistic -> score 0-100, fitted on held-out baseline windows; the same rule for the autoencoder's
 * reconstruction error and for the baselines' statistics (models/ANOMALY.md, "Score").
 *
 *   p(e)  = P(held-out statistic ≥ e), read off the held-out quantiles (linear interpolation),
 *           up to their 99.9th percentile q999; beyond it p = 0.001 · (q999 / e)², so the tail
 *           keeps falling off smoothly with the ratio where the held-out windows say nothing.
 *   score = 100 / (1 + p / 0.005)   →   p = 0.005 (the held-out 99.5th percentile) gives 50.
 */

import { quantileSorted } from "./normalisation.js";
import type { Calibration } from "./types.js";

/** Tail probability that maps to 50. */
export const ANCHOR_TAIL = 0.005;
/** Where the empirical tail hands over to the power law (the held-out 99.9th percentile). */
export const SWITCH_TAIL = 0.001;
/** Exponent of the power-law tail beyond it. */
export const TAIL_EXPONENT = 2;
/** Quantiles stored: levels 0, 0.001, …, 1. */
export const QUANTILE_COUNT = 1001;

export const CALIBRATION_RULE =
  "score = 100 / (1 + p / 0.005), p = P(held-out statistic >= e) from the held-out quantiles up to their " +
  "99.9th percentile q999, p = 0.001 * (q999 / e)^2 beyond it; score >= 50 (the held-out p99.5) is anomalous";

/**
 * Quantile at level u with the Weibull plotting position (type 6: h = (n + 1)·u − 1, clamped to the
 * sample): a fresh draw exceeds it with probability 1 − u on average, the property the score's
 * "0.5% of normal windows reach 50" rests on (type 7 would give 0.7% with 500 held-out windows).
 */
function unbiasedQuantile(sorted: Float64Array, u: number): number {
  const n = sorted.length;
  const h = Math.min(n - 1, Math.max(0, (n + 1) * u - 1));
  const lo = Math.floor(h);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

/** Fits the mapping on the held-out windows' statistics (non-finite values are left out). */
export function fitCalibration(heldOutStatistics: readonly number[]): Calibration {
  const finite = heldOutStatistics.filter((x) => Number.isFinite(x));
  if (finite.length === 0) throw new RangeError("calibration needs at least one finite held-out statistic");
  const sorted = Float64Array.from(finite).sort();
  const quantiles: number[] = [];
  for (let i = 0; i < QUANTILE_COUNT; i++) quantiles.push(unbiasedQuantile(sorted, i / (QUANTILE_COUNT - 1)));
  return { windows: finite.length, p995: quantiles[Math.round((1 - ANCHOR_TAIL) * (QUANTILE_COUNT - 1))]!, quantiles, rule: CALIBRATION_RULE };
}

/** P(held-out ≥ e) read off the stored quantiles, interpolating linearly between them. */
function empiricalTail(q: readonly number[], e: number): number {
  const m = q.length;
  if (m === 0 || e <= q[0]!) return 1;
  if (e >= q[m - 1]!) return 0;
  let lo = 0;
  let hi = m - 1;
  // invariant q[lo] < e <= q[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (q[mid]! < e) lo = mid;
    else hi = mid;
  }
  const span = q[hi]! - q[lo]!;
  return (m - 1 - lo - (span > 0 ? (e - q[lo]!) / span : 1)) / (m - 1);
}

/** The tail probability the score is computed from (exported for the tests and the docs' table). */
export function tailProbability(c: Calibration, statistic: number): number {
  if (Number.isNaN(statistic)) return 1;
  if (statistic < c.p995) return Math.max(ANCHOR_TAIL, empiricalTail(c.quantiles, statistic));
  const q999 = Math.max(c.p995, quantileSorted(c.quantiles, 1 - SWITCH_TAIL));
  // The clamps keep the pieces monotone and the anchor exact whatever rounding or ties do.
  if (statistic <= q999) return Math.min(ANCHOR_TAIL, Math.max(SWITCH_TAIL, empiricalTail(c.quantiles, statistic)));
  return q999 > 0 ? SWITCH_TAIL * (q999 / statistic) ** TAIL_EXPONENT : 0;
}

/** Score 0-100 of a statistic; 50 at the held-out 99.5th percentile, higher is more anomalous. */
export function calibratedScore(c: Calibration, statistic: number): number {
  return 100 / (1 + tailProbability(c, statistic) / ANCHOR_TAIL);
}
