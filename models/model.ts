/**
 * A loaded anomaly model: normalises a batch of layer-window inputs, runs the autoencoder, and turns
 * each window's masked reconstruction error into a calibrated 0-100 score with the columns that
 * contributed most (models/ANOMALY.md). Scoring is synchronous so a worker can answer in one turn.
 */

import { Code, ShadowError } from "../common/errors.js";
import { parseArtifact, serializeArtifact } from "./artifact.js";
import { activeBackend } from "./backend.js";
import { calibratedScore } from "./calibration.js";
import { COLUMN_NAMES, signedExpm1 } from "./columns.js";
import { Forward, decodeWeights } from "./network.js";
import { normalise } from "./normalisation.js";
import type { AnomalyReasonOut, ModelArtifact, ModelInput, ModelManifest, ScoredWindow } from "./types.js";

/** Rows per predict call (measured: the wasm backend is 3× faster per row at 64 than at 128 or more). */
export const SCORE_BATCH = 64;
/** Reasons kept per window. */
export const MAX_REASONS = 5;

export class AnomalyModel {
  readonly manifest: ModelManifest;
  private readonly weights: ModelArtifact["weights"];
  private network: Forward | undefined;
  /** Baseline medians in feature units, per column (the reasons' `baseline`). */
  private readonly baselines: number[];

  /** Wraps an already validated artifact (train.ts and fromArtifact); the network loads on first use. */
  constructor(artifact: ModelArtifact) {
    this.manifest = artifact.manifest;
    this.weights = artifact.weights;
    this.baselines = artifact.manifest.normalisation.center.map(signedExpm1);
  }

  /** Validates an artifact (object, JSON text or bytes) and loads it; throws ModelError. */
  static fromArtifact(a: ModelArtifact | string | Uint8Array, o: { minWindows?: number } = {}): AnomalyModel {
    return new AnomalyModel(parseArtifact(typeof a === "string" || a instanceof Uint8Array ? a : serializeArtifact(a), o));
  }

  private net(): Forward {
    if (activeBackend() === undefined) throw new ShadowError(Code.FailedPrecondition, "anomaly model: call initBackend() before scoring");
    this.network ??= new Forward(this.manifest.architecture, decodeWeights(this.weights));
    return this.network;
  }

  /** Scores a batch of inputs, one result per input in order. */
  score(inputs: readonly ModelInput[]): ScoredWindow[] {
    const network = this.net();
    const d = COLUMN_NAMES.length;
    const out: ScoredWindow[] = [];
    for (let start = 0; start < inputs.length; start += SCORE_BATCH) {
      const batch = inputs.slice(start, start + SCORE_BATCH);
      const n = batch.length;
      const z = new Float32Array(n * d);
      const sigma = new Float64Array(n * d);
      const raw = new Float64Array(n * d);
      const mask = new Uint8Array(n * d);
      const masked = normalise(this.manifest.normalisation, batch, { z, sigma, raw, mask });
      const recon = network.run(z, n, d);
      for (let i = 0; i < n; i++) out.push(this.scoreRow(i * d, z, recon, sigma, raw, mask, masked[i]!));
    }
    return out;
  }

  private scoreRow(base: number, z: Float32Array, recon: Float32Array, sigma: Float64Array, raw: Float64Array, mask: Uint8Array, masked: number): ScoredWindow {
    const d = COLUMN_NAMES.length;
    const sq = new Float64Array(d);
    let total = 0;
    for (let j = 0; j < d; j++) {
      if (!mask[base + j]) continue;
      const e = z[base + j]! - recon[base + j]!;
      sq[j] = e * e;
      total += sq[j]!;
    }
    const present = d - masked;
    if (present === 0) return { score: 0, error: 0, reasons: [], masked };
    const error = total / present;
    const order: number[] = [];
    for (let j = 0; j < d; j++) if (mask[base + j] && sq[j]! > 0) order.push(j);
    order.sort((a, b) => sq[b]! - sq[a]!);
    const reasons: AnomalyReasonOut[] = order.slice(0, MAX_REASONS).map((j) => ({
      feature: COLUMN_NAMES[j]!,
      sigma: sigma[base + j]!,
      contribution: sq[j]! / total,
      value: raw[base + j]!,
      baseline: this.baselines[j]!,
    }));
    return { score: calibratedScore(this.manifest.calibration, error), error, reasons, masked };
  }

  /** The artifact (as validated or as trained). */
  toArtifact(): ModelArtifact {
    return { manifest: this.manifest, weights: this.weights };
  }

  /** Frees the network's tensors; the model reloads them if it scores again. */
  dispose(): void {
    this.network?.dispose();
    this.network = undefined;
  }
}
