/**
 * The anomaly model's contract, shared by the model code (models/), the agent's scoring
 * (agent/scoring/), the training job (cli `train`) and the aggregator (ModelUpdate). The formula is
 * in models/ANOMALY.md; the artifact's validation in models/artifact.ts.
 *
 * The implementations live in:
 *  - models/backend.ts   `initBackend()`: tfjs-node if it loads, else wasm, else cpu.
 *  - models/model.ts     `AnomalyModel` (score a batch, artifact round trip).
 *  - models/train.ts     `trainModel()` (normalisation, autoencoder, calibration).
 *  - models/artifact.ts  `parseArtifact()` / `serializeArtifact()` (validation, ModelError).
 *  - models/baselines.ts per-feature z-score and EWMA detectors (the benchmark's baselines).
 *  - models/alerting.ts  `AlertGate`: warm-up, k of n persistence, hysteresis and cooldown.
 *  - models/input.ts     `inputsFromWindow()`: a WindowSummary's layers as model inputs.
 */

/** Which tfjs backend runs the model. */
export type BackendName = "node" | "wasm" | "cpu";

export interface BackendChoice {
  name: BackendName;
  /** Why (e.g. "tfjs-node: Cannot find module '@tensorflow/tfjs-node'; wasm: loaded (simd)"). */
  reason: string;
}

/** One layer-window as the model sees it: the decoded vector and the window's length. */
export interface ModelInput {
  /** The `layer-window-v2` vector (models/features.ts order); NaN/Infinity = unavailable. */
  vector: ArrayLike<number>;
  /** Window length in seconds (end - start), > 0. */
  seconds: number;
}

export type ModelScope = { kind: "image"; imageId: string } | { kind: "generic" };

/** Robust normalisation fitted on the baseline windows (per model input column). */
export interface Normalisation {
  /** Names of the model's input columns (derived from feature names, e.g. "cpu_seconds.rate"). */
  columns: string[];
  /** Median per column (after the column's transform). */
  center: number[];
  /** Robust scale per column (IQR / 1.349, floored so a constant column does not divide by 0). */
  scale: number[];
  /** How a raw feature becomes a column value before centring, e.g. "log1p". */
  transform: string;
}

/** Error -> score mapping fitted on held-out baseline windows. */
export interface Calibration {
  /** Held-out windows the mapping was fitted on. */
  windows: number;
  /** The held-out errors' 99.5th percentile: maps to score 50. */
  p995: number;
  /** Sorted quantiles of the held-out error (for the empirical tail), at most 1001 values. */
  quantiles: number[];
  /** The rule, in words, as documented in models/ANOMALY.md. */
  rule: string;
}

export interface ModelManifest {
  format: "shadowlayer-anomaly-model";
  formatVersion: 1;
  /** Unique per artifact, sortable: "<ISO time>-<8 hex of the weights hash>". */
  version: string;
  /** Must equal models/features.ts FEATURE_VERSION to be loaded. */
  featureVersion: string;
  scope: ModelScope;
  architecture: { inputs: number; hidden: number[]; activation: string };
  normalisation: Normalisation;
  calibration: Calibration;
  /** Backend it was trained on. */
  backend: BackendName;
  trainingWindows: number;
  /** sha256 (hex) of the training vectors, in order. */
  dataHash: string;
  /** sha256 (hex) of the weights' bytes, checked on load. */
  weightsHash: string;
  /** ISO 8601. */
  createdAt: string;
  epochs: number;
  finalLoss: number;
}

export interface ModelArtifact {
  manifest: ModelManifest;
  /** Dense layers' kernels and biases in order, float32 little-endian, base64. */
  weights: { name: string; shape: number[]; dataB64: string }[];
}

export interface AnomalyReasonOut {
  feature: string;
  /** (value - median) / scale on the model column, signed. */
  sigma: number;
  /** Share (0-1) of the window's reconstruction error. */
  contribution: number;
  value: number;
  baseline: number;
}

export interface ScoredWindow {
  /** 0-100 (models/ANOMALY.md). */
  score: number;
  /** Mean squared reconstruction error over the unmasked columns. */
  error: number;
  /** Largest contributions first, at most 5. */
  reasons: AnomalyReasonOut[];
  /** Columns masked (missing or unavailable input). */
  masked: number;
}

export interface TrainProgress {
  epoch: number;
  epochs: number;
  loss: number;
}

export interface TrainOptions {
  scope: ModelScope;
  /** Default 30 (early stop on a flat loss may end sooner). */
  epochs?: number;
  /** Share of the windows held out for calibration (default 0.2). */
  holdout?: number;
  /** Deterministic shuffles and initial weights. */
  seed?: number;
  onProgress?: (p: TrainProgress) => void;
}

/** Fewer baseline windows than this and no model is trained or loaded. */
export const MIN_TRAINING_WINDOWS = 200;
/** The largest artifact accepted (bytes of JSON). */
export const MAX_ARTIFACT_BYTES = 4 * 1024 * 1024;
