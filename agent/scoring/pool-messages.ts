/**
 * The messages between the scoring pool (main thread) and its workers, and how a batch of model
 * inputs travels: packed into two Float64Arrays whose buffers are transferred, not copied.
 */
import type { BackendChoice, BackendName, ModelInput, ModelScope, ScoredWindow } from "../../models/types.js";

export interface WorkerInit {
  prefer: BackendName | "auto";
}

/** Model inputs packed row by row: `vectors` holds `count` rows of `width` numbers. */
export interface PackedInputs {
  vectors: Float64Array;
  seconds: Float64Array;
  width: number;
}

export type TaskRequest =
  | { type: "train"; id: number; key: string; inputs: PackedInputs; scope: ModelScope; minWindows: number; epochs?: number; seed?: number }
  /** `artifact` is sent only when the worker is not known to hold `key` at `version`. */
  | { type: "score"; id: number; key: string; version: string; artifact?: string; inputs: PackedInputs };

export type WorkerReply =
  | { type: "ready"; backend: BackendChoice }
  | { type: "init-failed"; error: string }
  | { type: "trained"; id: number; key: string; version: string; artifact: string }
  | { type: "scored"; id: number; windows: ScoredWindow[] }
  /** A score task without an artifact for a model the worker does not hold (it evicted it). */
  | { type: "missing"; id: number }
  | { type: "failed"; id: number; error: string; reason?: string };

/** Packs inputs for transfer; a shorter vector is padded with NaN (unavailable). */
export function packInputs(inputs: readonly ModelInput[]): PackedInputs {
  const width = inputs.reduce((w, x) => Math.max(w, x.vector.length), 0);
  const vectors = new Float64Array(inputs.length * width).fill(Number.NaN);
  const seconds = new Float64Array(inputs.length);
  inputs.forEach((x, i) => {
    for (let j = 0; j < x.vector.length; j++) vectors[i * width + j] = Number(x.vector[j]);
    seconds[i] = x.seconds;
  });
  return { vectors, seconds, width };
}

/** The inputs again, as views on the packed rows (no copy). */
export function unpackInputs(p: PackedInputs): ModelInput[] {
  const out: ModelInput[] = [];
  for (let i = 0; i < p.seconds.length; i++) out.push({ vector: p.vectors.subarray(i * p.width, (i + 1) * p.width), seconds: p.seconds[i] ?? 0 });
  return out;
}

/** The buffers to transfer with a request. */
export function transferList(r: TaskRequest): ArrayBuffer[] {
  return [r.inputs.vectors.buffer as ArrayBuffer, r.inputs.seconds.buffer as ArrayBuffer];
}
