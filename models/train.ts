/**
 * Trains an anomaly model from baseline windows: a seeded split into training and held-out windows,
 * the robust normalisation fitted on the training part, the dense autoencoder trained with Adam on
 * the mean squared reconstruction error (early stop when the loss goes flat), and the score
 * calibration fitted on the held-out windows' errors (models/ANOMALY.md).
 */

import { createHash } from "node:crypto";
import * as tf from "@tensorflow/tfjs-core";
import { ModelError } from "./artifact.js";
import { activeBackend, initBackend } from "./backend.js";
import { CALIBRATION_RULE, fitCalibration } from "./calibration.js";
import { COLUMN_NAMES } from "./columns.js";
import { FEATURE_COUNT, FEATURE_VERSION } from "./features.js";
import { AnomalyModel } from "./model.js";
import { DEFAULT_HIDDEN, HIDDEN_ACTIVATION, buildNetwork, exportWeights, weightsHash } from "./network.js";
import { fitNormalisation, normalise } from "./normalisation.js";
import { MIN_TRAINING_WINDOWS, type ModelArtifact, type ModelInput, type ModelManifest, type TrainOptions } from "./types.js";
import { seededRandom } from "./random.js";

export const DEFAULT_EPOCHS = 30;
export const DEFAULT_HOLDOUT = 0.2;
/** Rows per training step (the wasm backend: 128 trains 10,000 windows an epoch in about 0.4 s). */
export const BATCH_SIZE = 128;
export const LEARNING_RATE = 0.003;
/** Early stop: the epoch loss improved by less than this share of the best loss … */
export const FLAT_LOSS_SHARE = 0.01;
/** … for this many epochs in a row. */
export const FLAT_EPOCHS = 3;
/** Training lets the event loop run at least this often (ms), wherever it runs. */
export const YIELD_MS = 10;


function shuffled(n: number, next: () => number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [idx[i], idx[j]] = [idx[j]!, idx[i]!];
  }
  return idx;
}

/** sha256 of the inputs in order: each vector's FEATURE_COUNT float64 (LE), then its seconds. */
export function dataHash(inputs: readonly ModelInput[]): string {
  const h = createHash("sha256");
  const buf = Buffer.alloc((FEATURE_COUNT + 1) * 8);
  for (const input of inputs) {
    for (let i = 0; i < FEATURE_COUNT; i++) buf.writeDoubleLE(i < input.vector.length ? Number(input.vector[i]) : Number.NaN, i * 8);
    buf.writeDoubleLE(input.seconds, FEATURE_COUNT * 8);
    h.update(buf);
  }
  return h.digest("hex");
}

/**
 * Per row, the mean squared error over the entries present in the target (NaN = masked): the same
 * error the scores are computed from. A row with nothing present contributes 0.
 */
function maskedMse(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const present = tf.logicalNot(tf.isNaN(yTrue));
    const diff = tf.where(present, tf.sub(yTrue, yPred), tf.zerosLike(yPred));
    return tf.div(tf.sum(tf.square(diff), -1), tf.maximum(tf.sum(tf.cast(present, "float32"), -1), 1));
  });
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Trains a model on baseline windows. Throws ModelError("too-few-windows") below `minWindows`
 * (default MIN_TRAINING_WINDOWS). Starts the backend (auto) if none is running.
 */
export async function trainModel(inputs: readonly ModelInput[], o: TrainOptions & { minWindows?: number }): Promise<AnomalyModel> {
  const minWindows = o.minWindows ?? MIN_TRAINING_WINDOWS;
  if (inputs.length < Math.max(2, minWindows)) {
    throw new ModelError("too-few-windows", `training needs at least ${Math.max(2, minWindows)} baseline windows, got ${inputs.length}`);
  }
  const holdout = o.holdout ?? DEFAULT_HOLDOUT;
  if (!(holdout > 0 && holdout < 1)) throw new ModelError("invalid", `holdout ${holdout} is not between 0 and 1`);
  const epochs = o.epochs ?? DEFAULT_EPOCHS;
  if (!Number.isInteger(epochs) || epochs < 1 || epochs > 1000) throw new ModelError("invalid", `epochs ${epochs} is not an integer in 1..1000`);
  const seed = o.seed ?? 1;
  const backend = activeBackend() ?? (await initBackend());

  const order = shuffled(inputs.length, seededRandom(seed));
  const heldCount = Math.min(inputs.length - 1, Math.max(1, Math.round(inputs.length * holdout)));
  const train = order.slice(heldCount).map((i) => inputs[i]!);
  const heldOut = order.slice(0, heldCount).map((i) => inputs[i]!);

  const normalisation = fitNormalisation(train);
  await tick();
  const d = COLUMN_NAMES.length;
  const n = train.length;
  const z = new Float32Array(n * d);
  const mask = new Uint8Array(n * d);
  normalise(normalisation, train, { z, mask });
  // Targets: NaN where masked, so the loss leaves those entries out (maskedMse).
  const target = z.map((x, k) => (mask[k] ? x : Number.NaN));

  const architecture = { inputs: d, hidden: [...DEFAULT_HIDDEN], activation: HIDDEN_ACTIVATION };
  const network = buildNetwork(architecture, seed);
  const optimizer = tf.train.adam(LEARNING_RATE);
  network.compile({ optimizer, loss: maskedMse });

  const next = seededRandom(seed ^ 0x9e3779b9);
  const batch = new Float32Array(BATCH_SIZE * d);
  const batchTarget = new Float32Array(BATCH_SIZE * d);
  let best = Number.POSITIVE_INFINITY;
  let flat = 0;
  let epoch = 0;
  let loss = Number.NaN;
  let lastYield = performance.now();
  try {
    while (epoch < epochs) {
      const perm = shuffled(n, next);
      let sum = 0;
      for (let s = 0; s < n; s += BATCH_SIZE) {
        const rows = Math.min(BATCH_SIZE, n - s);
        for (let r = 0; r < rows; r++) {
          const from = perm[s + r]! * d;
          batch.set(z.subarray(from, from + d), r * d);
          batchTarget.set(target.subarray(from, from + d), r * d);
        }
        const x = tf.tensor2d(batch.subarray(0, rows * d), [rows, d]);
        const y = tf.tensor2d(batchTarget.subarray(0, rows * d), [rows, d]);
        try {
          sum += Number(await network.trainOnBatch(x, y)) * rows;
        } finally {
          tf.dispose([x, y]);
        }
        if (performance.now() - lastYield > YIELD_MS) {
          await tick();
          lastYield = performance.now();
        }
      }
      epoch++;
      loss = sum / n;
      o.onProgress?.({ epoch, epochs, loss });
      if (loss < best * (1 - FLAT_LOSS_SHARE)) {
        best = loss;
        flat = 0;
      } else if (++flat >= FLAT_EPOCHS) break;
    }
    if (!Number.isFinite(loss)) throw new ModelError("invalid", `training diverged (loss ${loss})`);

    const { weights, arrays } = exportWeights(network, architecture);
    const hash = weightsHash(arrays);
    const createdAt = new Date().toISOString();
    const manifest: ModelManifest = {
      format: "shadowlayer-anomaly-model",
      formatVersion: 1,
      version: `${createdAt}-${hash.slice(0, 8)}`,
      featureVersion: FEATURE_VERSION,
      scope: o.scope,
      architecture,
      normalisation,
      calibration: { windows: 0, p995: 0, quantiles: [], rule: CALIBRATION_RULE },
      backend: backend.name,
      trainingWindows: inputs.length,
      dataHash: dataHash(inputs),
      weightsHash: hash,
      createdAt,
      epochs: epoch,
      finalLoss: loss,
    };
    await tick();
    const uncalibrated = new AnomalyModel({ manifest, weights });
    const errors = uncalibrated.score(heldOut).map((s) => s.error);
    uncalibrated.dispose();
    const artifact: ModelArtifact = { manifest: { ...manifest, calibration: fitCalibration(errors) }, weights };
    return new AnomalyModel(artifact);
  } finally {
    network.dispose();
    optimizer.dispose();
  }
}
