/**
 * The anomaly benchmark's worker thread: trains the autoencoder on 10,000 windows (the baseline
 * windows resampled with small jitter) and measures inference throughput (AnomalyModel.score on
 * batches), off the main thread, while the main thread measures its event-loop delay (the agent's
 * situation: telemetry on the main loop, the model in a worker). Posts one WorkerResult.
 */
import { parentPort, workerData } from "node:worker_threads";
import { initBackend } from "../../models/backend.js";
import { trainModel } from "../../models/train.js";
import type { ModelInput } from "../../models/types.js";
import { seededRandom } from "../harness/anomaly-load.js";

export interface WorkerJob {
  /** Baseline vectors and window lengths (s). */
  vectors: number[][];
  seconds: number[];
  trainWindows: number;
  /** Relative jitter (standard deviation) applied to each resampled value. */
  jitter: number;
  batch: number;
  /** Inference runs at most this long (ms) and at most `maxBatches` batches. */
  inferMs: number;
  maxBatches: number;
  seed: number;
}

export interface WorkerResult {
  backend: string;
  backendReason: string;
  trainS: number;
  trainWindows: number;
  epochs: number;
  finalLoss: number;
  inferWindows: number;
  inferS: number;
}

/** A standard normal draw (Box-Muller) from a uniform source. */
function gaussian(rnd: () => number): number {
  const u = Math.max(1e-12, rnd());
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
}

/** `n` windows drawn with replacement from the baseline, each finite value scaled by (1 + jitter·N(0,1)), never negative. */
export function resample(vectors: readonly number[][], seconds: readonly number[], n: number, jitter: number, seed: number): ModelInput[] {
  const rnd = seededRandom(seed);
  const out: ModelInput[] = [];
  for (let i = 0; i < n; i++) {
    const k = Math.floor(rnd() * vectors.length);
    const v = vectors[k]!.map((x) => (Number.isFinite(x) ? Math.max(0, x * (1 + jitter * gaussian(rnd))) : x));
    out.push({ vector: v, seconds: seconds[k]! });
  }
  return out;
}

async function run(job: WorkerJob): Promise<WorkerResult> {
  const backend = await initBackend("auto");
  const inputs = resample(job.vectors, job.seconds, job.trainWindows, job.jitter, job.seed);
  const t0 = performance.now();
  const model = await trainModel(inputs, { scope: { kind: "generic" }, seed: job.seed });
  const trainS = (performance.now() - t0) / 1000;
  let windows = 0;
  const t1 = performance.now();
  for (let b = 0; b < job.maxBatches && performance.now() - t1 < job.inferMs; b++) {
    const from = (b * job.batch) % Math.max(1, inputs.length - job.batch);
    windows += model.score(inputs.slice(from, from + job.batch)).length;
  }
  const inferS = (performance.now() - t1) / 1000;
  const result: WorkerResult = {
    backend: backend.name,
    backendReason: backend.reason,
    trainS,
    trainWindows: model.manifest.trainingWindows,
    epochs: model.manifest.epochs,
    finalLoss: model.manifest.finalLoss,
    inferWindows: windows,
    inferS,
  };
  model.dispose();
  return result;
}

if (parentPort !== null && workerData !== null && workerData !== undefined) {
  const port = parentPort;
  run(workerData as WorkerJob).then(
    (r) => port.postMessage({ ok: true, result: r }),
    (err: unknown) => port.postMessage({ ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
}
