/**
 * Robust per-column normalisation, fitted on the training windows: z = (t − median) / scale on the
 * transformed column t = signedLog1p(value), scale = IQR / 1.349 with a fallback and a floor so a
 * constant or mostly-zero column does not divide by 0 (models/ANOMALY.md, "Normalisation").
 */

import { COLUMN_NAMES, MODEL_COLUMNS, TRANSFORM, rawColumns, signedLog1p } from "./columns.js";
import type { ModelInput, Normalisation } from "./types.js";

/** The smallest scale, in log1p units: a change of about 5% of a value is one sigma at most. */
export const SCALE_FLOOR = 0.05;
/** Normalised inputs are clamped to ±this before the network, so one wild reading cannot saturate it. */
export const Z_CLAMP = 50;

/** Linear-interpolated quantile (type 7) of sorted values. */
export function quantileSorted(sorted: ArrayLike<number>, u: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const h = (n - 1) * u;
  const lo = Math.floor(h);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

/** Transformed column values of the inputs, one Float64Array per column, masked entries left out. */
function transformedColumns(inputs: readonly ModelInput[]): number[][] {
  const cols: number[][] = MODEL_COLUMNS.map(() => []);
  const raw = new Float64Array(MODEL_COLUMNS.length);
  for (const input of inputs) {
    rawColumns(input, raw);
    for (let j = 0; j < raw.length; j++) if (!Number.isNaN(raw[j]!)) cols[j]!.push(signedLog1p(raw[j]!));
  }
  return cols;
}

/**
 * Median and robust scale per column. The scale is IQR/1.349 (the standard deviation for normal
 * data); when the IQR is below the floor (over half the windows share one value, e.g. an idle
 * counter), 1.2533 × the mean absolute deviation from the median is used instead, so occasional
 * bursts set the scale; the result is never below SCALE_FLOOR. A column masked in every window gets
 * centre 0 and scale 1.
 */
export function fitNormalisation(inputs: readonly ModelInput[]): Normalisation {
  const cols = transformedColumns(inputs);
  const center: number[] = [];
  const scale: number[] = [];
  for (const values of cols) {
    if (values.length === 0) {
      center.push(0);
      scale.push(1);
      continue;
    }
    const sorted = Float64Array.from(values).sort();
    const med = quantileSorted(sorted, 0.5);
    let s = (quantileSorted(sorted, 0.75) - quantileSorted(sorted, 0.25)) / 1.349;
    if (s < SCALE_FLOOR) {
      let mad = 0;
      for (const x of sorted) mad += Math.abs(x - med);
      s = (1.2533 * mad) / sorted.length;
    }
    center.push(med);
    scale.push(Math.max(s, SCALE_FLOOR));
  }
  return { columns: [...COLUMN_NAMES], center, scale, transform: TRANSFORM };
}

/**
 * Normalises inputs into a row-major matrix for the network: z clamped to ±Z_CLAMP, 0 (the centre)
 * where masked. `sigma` gets the unclamped z (NaN where masked), `raw` the feature-unit values
 * (NaN where masked), `mask` 1 where present; returns the masked count per row.
 */
export function normalise(
  norm: Normalisation,
  inputs: readonly ModelInput[],
  out: { z: Float32Array; sigma?: Float64Array; raw?: Float64Array; mask?: Uint8Array },
): Uint16Array {
  const d = MODEL_COLUMNS.length;
  const raw = new Float64Array(d);
  const masked = new Uint16Array(inputs.length);
  for (let i = 0; i < inputs.length; i++) {
    masked[i] = rawColumns(inputs[i]!, raw);
    for (let j = 0; j < d; j++) {
      const k = i * d + j;
      const x = raw[j]!;
      if (out.raw) out.raw[k] = x;
      if (Number.isNaN(x)) {
        out.z[k] = 0;
        if (out.sigma) out.sigma[k] = Number.NaN;
        if (out.mask) out.mask[k] = 0;
        continue;
      }
      const z = (signedLog1p(x) - norm.center[j]!) / norm.scale[j]!;
      out.z[k] = Math.max(-Z_CLAMP, Math.min(Z_CLAMP, z));
      if (out.sigma) out.sigma[k] = z;
      if (out.mask) out.mask[k] = 1;
    }
  }
  return masked;
}
