/**
 * The benchmark's baselines, in their textbook form, on the same model columns as the autoencoder
 * (signed log1p of each column, masked entries left out): a per-feature z-score (statistic = the
 * largest |z| over the columns) and a per-feature EWMA control chart (statistic = the largest
 * |EWMA| / σ_EWMA). Their thresholds come from fitCalibration on held-out statistics, the same
 * rule as the autoencoder's: score ≥ 50 above the held-out 99.5th percentile (models/ANOMALY.md).
 */

import { calibratedScore, fitCalibration } from "./calibration.js";
import { MODEL_COLUMNS, rawColumns, signedLog1p } from "./columns.js";
import { SCALE_FLOOR } from "./normalisation.js";
import type { Calibration, ModelInput } from "./types.js";

/** Per-column mean and standard deviation of the transformed columns (floored like the AE's scale). */
function fitMoments(baseline: readonly ModelInput[]): { mean: Float64Array; std: Float64Array } {
  const d = MODEL_COLUMNS.length;
  const sum = new Float64Array(d);
  const sq = new Float64Array(d);
  const count = new Float64Array(d);
  const raw = new Float64Array(d);
  for (const input of baseline) {
    rawColumns(input, raw);
    for (let j = 0; j < d; j++) {
      if (Number.isNaN(raw[j]!)) continue;
      const t = signedLog1p(raw[j]!);
      sum[j]! += t;
      sq[j]! += t * t;
      count[j]!++;
    }
  }
  const mean = new Float64Array(d);
  const std = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    const n = count[j]!;
    mean[j] = n > 0 ? sum[j]! / n : 0;
    const variance = n > 1 ? (sq[j]! - n * mean[j]! * mean[j]!) / (n - 1) : 0;
    std[j] = Math.max(Math.sqrt(Math.max(0, variance)), SCALE_FLOOR);
  }
  return { mean, std };
}

/** Standardised columns of one input (NaN where masked). */
function standardise(input: ModelInput, mean: Float64Array, std: Float64Array, raw: Float64Array, out: Float64Array): void {
  rawColumns(input, raw);
  for (let j = 0; j < out.length; j++) out[j] = Number.isNaN(raw[j]!) ? Number.NaN : (signedLog1p(raw[j]!) - mean[j]!) / std[j]!;
}

/** Shared by both baselines: an optional calibration and the 0-100 score it gives. */
abstract class CalibratedDetector {
  calibration: Calibration | undefined;

  abstract statistic(inputs: readonly ModelInput[], streamKeys?: readonly string[]): number[];

  /** Fits the threshold on held-out windows' statistics (score ≥ 50 above their 99.5th percentile). */
  calibrate(heldOutStatistics: readonly number[]): Calibration {
    this.calibration = fitCalibration(heldOutStatistics);
    return this.calibration;
  }

  /** Calibrated scores (0-100) of the inputs (for the EWMA this advances the streams like statistic()); calibrate() first. */
  score(inputs: readonly ModelInput[], streamKeys?: readonly string[]): number[] {
    const c = this.calibration;
    if (!c) throw new RangeError("baseline detector: calibrate() before score()");
    return this.statistic(inputs, streamKeys).map((s) => calibratedScore(c, s));
  }
}

/** Per-feature z-score: max over columns of |t − mean| / std, fitted on the baseline windows. */
export class ZScoreDetector extends CalibratedDetector {
  private constructor(
    private readonly mean: Float64Array,
    private readonly std: Float64Array,
  ) {
    super();
  }

  static fit(baseline: readonly ModelInput[]): ZScoreDetector {
    const { mean, std } = fitMoments(baseline);
    return new ZScoreDetector(mean, std);
  }

  /** One statistic per input; 0 when every column is masked. */
  statistic(inputs: readonly ModelInput[]): number[] {
    const d = MODEL_COLUMNS.length;
    const raw = new Float64Array(d);
    const z = new Float64Array(d);
    return inputs.map((input) => {
      standardise(input, this.mean, this.std, raw, z);
      let max = 0;
      for (let j = 0; j < d; j++) if (!Number.isNaN(z[j]!)) max = Math.max(max, Math.abs(z[j]!));
      return max;
    });
  }
}

/** Most streams an EWMA detector follows; the oldest is forgotten beyond it. */
export const MAX_STREAMS = 10_000;

interface EwmaState {
  ewma: Float64Array;
  /** Updates per column (σ_EWMA depends on it). */
  steps: Float64Array;
}

/**
 * EWMA control chart per feature: e_t = λ·x_t + (1 − λ)·e_{t−1}, e_0 = 0, on the standardised
 * column x; σ_EWMA(t) = sqrt(λ / (2 − λ) · (1 − (1 − λ)^{2t})); statistic = max over columns of
 * |e_t| / σ_EWMA(t). The control limit L is the calibration's 99.5th percentile. State is kept per
 * stream key (one container + layer), so each series is charted on its own; a masked column keeps
 * its previous EWMA.
 */
export class EwmaDetector extends CalibratedDetector {
  private readonly streams = new Map<string, EwmaState>();

  private constructor(
    private readonly mean: Float64Array,
    private readonly std: Float64Array,
    readonly lambda: number,
  ) {
    super();
  }

  static fit(baseline: readonly ModelInput[], o: { lambda?: number } = {}): EwmaDetector {
    const lambda = o.lambda ?? 0.2;
    if (!(lambda > 0 && lambda <= 1)) throw new RangeError(`EWMA lambda ${lambda} is not in (0, 1]`);
    const { mean, std } = fitMoments(baseline);
    return new EwmaDetector(mean, std, lambda);
  }

  /**
   * Advances each input's stream (in order) and returns its statistic. Without keys all inputs are
   * one stream.
   */
  statistic(inputs: readonly ModelInput[], streamKeys?: readonly string[]): number[] {
    const d = MODEL_COLUMNS.length;
    const raw = new Float64Array(d);
    const x = new Float64Array(d);
    const l = this.lambda;
    return inputs.map((input, i) => {
      const state = this.stream(streamKeys?.[i] ?? "");
      standardise(input, this.mean, this.std, raw, x);
      let max = 0;
      for (let j = 0; j < d; j++) {
        if (Number.isNaN(x[j]!)) continue;
        state.ewma[j] = l * x[j]! + (1 - l) * state.ewma[j]!;
        const t = ++state.steps[j]!;
        const sigma = Math.sqrt((l / (2 - l)) * (1 - (1 - l) ** (2 * t)));
        max = Math.max(max, Math.abs(state.ewma[j]!) / sigma);
      }
      return max;
    });
  }

  /** Forgets every stream's state. */
  reset(): void {
    this.streams.clear();
  }

  private stream(key: string): EwmaState {
    let s = this.streams.get(key);
    if (s) {
      this.streams.delete(key);
      this.streams.set(key, s);
      return s;
    }
    if (this.streams.size >= MAX_STREAMS) this.streams.delete(this.streams.keys().next().value!);
    s = { ewma: new Float64Array(MODEL_COLUMNS.length), steps: new Float64Array(MODEL_COLUMNS.length) };
    this.streams.set(key, s);
    return s;
  }
}
