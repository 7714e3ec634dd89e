/**
 * One line of text per anomaly reason ("cpu_seconds.rate 7.3σ above baseline (0.536 vs 0.0616)"),
 * for logs, `shadowlayer scores` and a rebuild's `performance-anomaly` reason. Reasons may come
 * from a peer, so the feature name is cut to a bounded, printable form.
 */

import type { AnomalyReasonOut } from "./types.js";

const MAX_FEATURE = 64;

function num(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  return Number(x.toPrecision(3)).toString();
}

/** The reason in words: feature, how many sigma above or below its baseline, value vs baseline. */
export function describeReason(r: AnomalyReasonOut): string {
  const feature = String(r.feature).replace(/[^\x21-\x7e]/g, "?").slice(0, MAX_FEATURE) || "?";
  const sigma = Number.isFinite(r.sigma) ? Math.abs(r.sigma).toFixed(1) : "?";
  const side = r.sigma < 0 ? "below" : "above";
  return `${feature} ${sigma}σ ${side} baseline (${num(r.value)} vs ${num(r.baseline)})`;
}
