/**
 * The model's input columns: which entries of the `layer-window-v2` vector the anomaly model reads,
 * in which unit, and the signed log1p transform applied before normalisation. The autoencoder and
 * the baselines share this so they see the same inputs (models/ANOMALY.md, "Inputs").
 */

import { COUNTS, FEATURE_NAMES, METRICS } from "./features.js";
import type { ModelInput } from "./types.js";

/** One model column: a vector entry, optionally divided by the window's length. */
export interface ModelColumn {
  /** Column name, derived from the feature name ("cpu_seconds.rate", "exec_count.rate"). */
  name: string;
  /** Index of the source feature in the vector. */
  feature: number;
  /** Divide by the window's length in seconds (counts turned into per-second rates). */
  perSecond: boolean;
  /** A negative value is impossible (a counter reset or a broken reading): masked. */
  nonNegative: boolean;
}

function feature(name: string): number {
  const i = FEATURE_NAMES.indexOf(name);
  if (i < 0) throw new RangeError(`unknown feature ${name}`);
  return i;
}

/**
 * Counters: per-second rate and the busiest tick (`.sum` and `.mean` are the rate times a constant
 * for a fixed window, so they would only repeat it). Gauges: mean, peak and growth per second
 * (`.sum` is the last value, close to the mean). Counts: per second, except `process_count`, which
 * is already a mean level.
 */
function buildColumns(): ModelColumn[] {
  const out: ModelColumn[] = [];
  for (const m of METRICS) {
    if (m.kind === "counter") {
      out.push({ name: `${m.name}.rate`, feature: feature(`${m.name}.rate`), perSecond: false, nonNegative: true });
      out.push({ name: `${m.name}.max`, feature: feature(`${m.name}.max`), perSecond: false, nonNegative: true });
    } else {
      out.push({ name: `${m.name}.mean`, feature: feature(`${m.name}.mean`), perSecond: false, nonNegative: true });
      out.push({ name: `${m.name}.max`, feature: feature(`${m.name}.max`), perSecond: false, nonNegative: true });
      out.push({ name: `${m.name}.rate`, feature: feature(`${m.name}.rate`), perSecond: false, nonNegative: false });
    }
  }
  for (const c of COUNTS) {
    if (c.name === "process_count") out.push({ name: c.name, feature: feature(c.name), perSecond: false, nonNegative: true });
    else out.push({ name: `${c.name}.rate`, feature: feature(c.name), perSecond: true, nonNegative: true });
  }
  return out;
}

export const MODEL_COLUMNS: readonly ModelColumn[] = buildColumns();
export const COLUMN_NAMES: readonly string[] = MODEL_COLUMNS.map((c) => c.name);
/** Name of the transform in the artifact's normalisation. */
export const TRANSFORM = "signed-log1p";

/** sign(x) · ln(1 + |x|): keeps 0 at 0, compresses heavy tails (bytes per second span 10 decades). */
export function signedLog1p(x: number): number {
  return x < 0 ? -Math.log1p(-x) : Math.log1p(x);
}

/** The inverse of signedLog1p (a median back in the feature's own unit). */
export function signedExpm1(y: number): number {
  return y < 0 ? -Math.expm1(-y) : Math.expm1(y);
}

/**
 * The raw column values of one input (feature units, before the transform) and which are masked:
 * NaN or ±Infinity, a negative value where none can be, an entry the vector lacks, or a per-second
 * column of a window without a valid length. Masked entries are NaN in `raw`.
 */
export function rawColumns(input: ModelInput, raw: Float64Array): number {
  const v = input.vector;
  const seconds = input.seconds;
  const validSeconds = typeof seconds === "number" && Number.isFinite(seconds) && seconds > 0;
  let masked = 0;
  for (let j = 0; j < MODEL_COLUMNS.length; j++) {
    const c = MODEL_COLUMNS[j]!;
    let x = c.feature < v.length ? Number(v[c.feature]) : Number.NaN;
    if (c.perSecond) x = validSeconds ? x / seconds : Number.NaN;
    if (!Number.isFinite(x) || (c.nonNegative && x < 0)) {
      raw[j] = Number.NaN;
      masked++;
    } else raw[j] = x;
  }
  return masked;
}
