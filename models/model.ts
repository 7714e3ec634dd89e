/**
 * A loaded anomaly model: normalises a batch of layer-window inputs, runs the autoencoder, and turns
 * each window's masked reconstruction error into a calibrated 0-100 score with the columns that
 * contributed most (models/ANOMALY.md). Scoring is synchronous so a worker can answer in one turn.
 */

import { Code, ShadowError } from "../common/errors.js";
import { ModelError, parseArtifact, serializeArtifact } from "./artifact.js";
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
  /** Scratch: one row's squared errors. */
  private readonly squares = new Float64Array(COLUMN_NAMES.length);

  /** Wraps an already validated artifact (train.ts and fromArtifact); the network loads on first use. */
  constructor(artifact: ModelArtifact) {
    this.manifest = artifact.manifest;
    this.weights = artifact.weights;
    this.baselines = artifact.manifest.normalisation.center.map(signedExpm1);
  }

  /** Validates an artifact (object, JSON text or bytes) and loads it; throws ModelError. */
  static fromArtifact(a: ModelArtifact | string | Uint8Array, o: { minWindows?: number } = {}): AnomalyModel {
    if (typeof a === "string" || a instanceof Uint8Array) return new AnomalyModel(parseArtifact(a, o));
    let text: string;
    try {
      text = serializeArtifact(a);
    } catch (err) {
      throw new ModelError("invalid", `model artifact cannot be serialised: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return new AnomalyModel(parseArtifact(text, o));
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
    if (masked >= d) return { score: 0, error: 0, reasons: [], masked };
    const sq = this.squares;
    // The MAX_REASONS largest squared errors, by insertion (d is a few dozen).
    const top: number[] = [];
    let total = 0;
    for (let j = 0; j < d; j++) {
      if (!mask[base + j]) continue;
      const e = z[base + j]! - recon[base + j]!;
      sq[j] = e * e;
      total += sq[j]!;
      if (sq[j]! <= 0 || (top.length === MAX_REASONS && sq[j]! <= sq[top[MAX_REASONS - 1]!]!)) continue;
      let k = Math.min(top.length, MAX_REASONS - 1);
      top[k] = j;
      while (k > 0 && sq[top[k - 1]!]! < sq[j]!) {
        top[k] = top[k - 1]!;
        top[--k] = j;
      }
    }
    const error = total / (d - masked);
    const reasons: AnomalyReasonOut[] = top.map((j) => ({
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
