/**
 * The model artifact's JSON form and its validation. An artifact comes from a file or a peer, so it
 * is parsed as hostile: size capped, every field type- and range-checked (own properties only, a
 * fresh object built from what was checked), numeric arrays of the declared length and finite, the
 * weights' hash recomputed. Failures are a ModelError whose `reason` callers branch on.
 */

import { Code, ShadowError } from "../common/errors.js";
import { COLUMN_NAMES, TRANSFORM } from "./columns.js";
import { FEATURE_VERSION } from "./features.js";
import { decodeWeights, weightShapes, weightsHash } from "./network.js";
import {
  MAX_ARTIFACT_BYTES,
  MIN_TRAINING_WINDOWS,
  type BackendName,
  type Calibration,
  type ModelArtifact,
  type ModelManifest,
  type ModelScope,
  type Normalisation,
} from "./types.js";

export type ModelErrorReason = "corrupt" | "feature-version" | "too-few-windows" | "too-large" | "hash-mismatch" | "invalid";

/** A model that cannot be trained or loaded, and why. */
export class ModelError extends ShadowError {
  readonly reason: ModelErrorReason;

  constructor(reason: ModelErrorReason, message: string, options?: { cause?: unknown }) {
    super(reason === "too-few-windows" ? Code.FailedPrecondition : Code.InvalidArgument, message, options);
    this.reason = reason;
  }
}

const FORMAT = "shadowlayer-anomaly-model";
const BACKENDS: readonly BackendName[] = ["node", "wasm", "cpu"];
/** Bounds on what a valid artifact can declare (far above what training produces). */
const MAX_HIDDEN_LAYERS = 8;
const MAX_UNITS = 1024;
const MAX_STRING = 1024;
const MAX_QUANTILES = 1001;
const HEX64 = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

type Obj = Record<string, unknown>;

function invalid(message: string): never {
  throw new ModelError("invalid", `invalid model artifact: ${message}`);
}

function obj(v: unknown, where: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) invalid(`${where} is not an object`);
  return v as Obj;
}

/** An own property (never one inherited through a `__proto__` key). */
function field(o: Obj, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;
}

function str(o: Obj, key: string, where: string, max = MAX_STRING): string {
  const v = field(o, key);
  if (typeof v !== "string") invalid(`${where}.${key} is not a string`);
  if (v.length > max) invalid(`${where}.${key} is longer than ${max} characters`);
  return v;
}

function num(o: Obj, key: string, where: string, opts: { integer?: boolean; min?: number; max?: number } = {}): number {
  const v = field(o, key);
  if (typeof v !== "number" || !Number.isFinite(v)) invalid(`${where}.${key} is not a finite number`);
  if (opts.integer && !Number.isInteger(v)) invalid(`${where}.${key} is not an integer`);
  if (opts.min !== undefined && v < opts.min) invalid(`${where}.${key} is ${v}, below ${opts.min}`);
  if (opts.max !== undefined && v > opts.max) invalid(`${where}.${key} is ${v}, above ${opts.max}`);
  return v;
}

function arr(o: Obj, key: string, where: string, length: { exact?: number; min?: number; max: number }): unknown[] {
  const v = field(o, key);
  if (!Array.isArray(v)) invalid(`${where}.${key} is not an array`);
  if (length.exact !== undefined && v.length !== length.exact) invalid(`${where}.${key} has ${v.length} entries, expected ${length.exact}`);
  if (v.length > length.max) invalid(`${where}.${key} has ${v.length} entries, more than ${length.max}`);
  if (length.min !== undefined && v.length < length.min) invalid(`${where}.${key} has ${v.length} entries, fewer than ${length.min}`);
  return v;
}

function finiteArray(o: Obj, key: string, where: string, length: { exact?: number; min?: number; max: number }, min?: number): number[] {
  const v = arr(o, key, where, length);
  return v.map((x, i) => {
    if (typeof x !== "number" || !Number.isFinite(x)) invalid(`${where}.${key}[${i}] is not a finite number`);
    if (min !== undefined && x < min) invalid(`${where}.${key}[${i}] is ${x}, below ${min}`);
    return x;
  });
}

function parseScope(v: unknown): ModelScope {
  const o = obj(v, "manifest.scope");
  const kind = field(o, "kind");
  if (kind === "generic") return { kind: "generic" };
  if (kind === "image") {
    const imageId = str(o, "imageId", "manifest.scope", 256);
    if (imageId.length === 0) invalid("manifest.scope.imageId is empty");
    return { kind: "image", imageId };
  }
  return invalid(`manifest.scope.kind is ${JSON.stringify(String(kind)).slice(0, 40)}, expected "image" or "generic"`);
}

function parseArchitecture(v: unknown): ModelManifest["architecture"] {
  const o = obj(v, "manifest.architecture");
  const inputs = num(o, "inputs", "manifest.architecture", { integer: true, min: 1, max: MAX_UNITS });
  if (inputs !== COLUMN_NAMES.length) invalid(`manifest.architecture.inputs is ${inputs}, this build's model has ${COLUMN_NAMES.length} input columns`);
  const hidden = finiteArray(o, "hidden", "manifest.architecture", { min: 1, max: MAX_HIDDEN_LAYERS }, 1);
  hidden.forEach((h, i) => {
    if (!Number.isInteger(h) || h > MAX_UNITS) invalid(`manifest.architecture.hidden[${i}] is not an integer in 1..${MAX_UNITS}`);
  });
  const activation = str(o, "activation", "manifest.architecture", 32);
  if (activation !== "elu" && activation !== "relu") invalid(`manifest.architecture.activation ${JSON.stringify(activation)} is not elu or relu`);
  return { inputs, hidden, activation };
}

function parseNormalisation(v: unknown): Normalisation {
  const o = obj(v, "manifest.normalisation");
  const n = COLUMN_NAMES.length;
  const columns = arr(o, "columns", "manifest.normalisation", { exact: n, max: n });
  columns.forEach((c, i) => {
    if (c !== COLUMN_NAMES[i]) invalid(`manifest.normalisation.columns[${i}] is ${JSON.stringify(String(c)).slice(0, 60)}, expected ${COLUMN_NAMES[i]}`);
  });
  const center = finiteArray(o, "center", "manifest.normalisation", { exact: n, max: n });
  const scale = finiteArray(o, "scale", "manifest.normalisation", { exact: n, max: n });
  scale.forEach((s, i) => {
    if (s <= 0) invalid(`manifest.normalisation.scale[${i}] is ${s}, not positive`);
  });
  const transform = str(o, "transform", "manifest.normalisation", 32);
  if (transform !== TRANSFORM) invalid(`manifest.normalisation.transform is ${JSON.stringify(transform)}, expected ${TRANSFORM}`);
  return { columns: [...COLUMN_NAMES], center, scale, transform };
}

function parseCalibration(v: unknown): Calibration {
  const o = obj(v, "manifest.calibration");
  const windows = num(o, "windows", "manifest.calibration", { integer: true, min: 1 });
  const p995 = num(o, "p995", "manifest.calibration", { min: 0 });
  const quantiles = finiteArray(o, "quantiles", "manifest.calibration", { min: 2, max: MAX_QUANTILES }, 0);
  for (let i = 1; i < quantiles.length; i++) if (quantiles[i]! < quantiles[i - 1]!) invalid(`manifest.calibration.quantiles are not sorted at ${i}`);
  const rule = str(o, "rule", "manifest.calibration");
  return { windows, p995, quantiles, rule };
}

function parseManifest(v: unknown, minWindows: number): ModelManifest {
  const m = obj(v, "manifest");
  if (field(m, "format") !== FORMAT) invalid(`manifest.format is not "${FORMAT}"`);
  if (field(m, "formatVersion") !== 1) invalid(`manifest.formatVersion is ${JSON.stringify(field(m, "formatVersion") ?? null).slice(0, 20)}, this build reads 1`);
  const featureVersion = str(m, "featureVersion", "manifest", 64);
  if (featureVersion !== FEATURE_VERSION) {
    throw new ModelError("feature-version", `model artifact is for feature version ${JSON.stringify(featureVersion)}, this build produces ${FEATURE_VERSION}`);
  }
  const trainingWindows = num(m, "trainingWindows", "manifest", { integer: true, min: 0 });
  if (trainingWindows < minWindows) {
    throw new ModelError("too-few-windows", `model artifact was trained on ${trainingWindows} windows, fewer than the ${minWindows} required`);
  }
  const backend = str(m, "backend", "manifest", 16);
  if (!BACKENDS.includes(backend as BackendName)) invalid(`manifest.backend ${JSON.stringify(backend)} is not node, wasm or cpu`);
  const dataHash = str(m, "dataHash", "manifest", 64);
  if (!HEX64.test(dataHash)) invalid("manifest.dataHash is not 64 lowercase hex digits");
  const hash = str(m, "weightsHash", "manifest", 64);
  if (!HEX64.test(hash)) invalid("manifest.weightsHash is not 64 lowercase hex digits");
  const createdAt = str(m, "createdAt", "manifest", 64);
  if (Number.isNaN(Date.parse(createdAt))) invalid("manifest.createdAt is not a date");
  const version = str(m, "version", "manifest", 128);
  if (version.length === 0) invalid("manifest.version is empty");
  return {
    format: FORMAT,
    formatVersion: 1,
    version,
    featureVersion,
    scope: parseScope(field(m, "scope")),
    architecture: parseArchitecture(field(m, "architecture")),
    normalisation: parseNormalisation(field(m, "normalisation")),
    calibration: parseCalibration(field(m, "calibration")),
    backend: backend as BackendName,
    trainingWindows,
    dataHash,
    weightsHash: hash,
    createdAt,
    epochs: num(m, "epochs", "manifest", { integer: true, min: 0 }),
    finalLoss: num(m, "finalLoss", "manifest", { min: 0 }),
  };
}

function parseWeights(v: unknown, manifest: ModelManifest): ModelArtifact["weights"] {
  const shapes = weightShapes(manifest.architecture);
  const list = Array.isArray(v) ? v : invalid("weights is not an array");
  if (list.length !== shapes.length) invalid(`weights has ${list.length} tensors, the architecture needs ${shapes.length}`);
  return shapes.map((expected, i) => {
    const w = obj(list[i], `weights[${i}]`);
    const name = str(w, "name", `weights[${i}]`, 64);
    if (name !== expected.name) invalid(`weights[${i}].name is ${JSON.stringify(name)}, expected ${expected.name}`);
    const shape = finiteArray(w, "shape", `weights[${i}]`, { exact: expected.shape.length, max: 2 });
    if (shape.some((d, k) => d !== expected.shape[k])) invalid(`weights[${i}] (${name}) has shape [${shape.join(",")}], expected [${expected.shape.join(",")}]`);
    const elements = expected.shape.reduce((a, b) => a * b, 1);
    const dataB64 = str(w, "dataB64", `weights[${i}]`, Math.ceil((elements * 4) / 3) * 4);
    if (!BASE64.test(dataB64) || dataB64.length % 4 !== 0) invalid(`weights[${i}] (${name}).dataB64 is not base64`);
    if (Buffer.byteLength(dataB64, "base64") !== elements * 4) invalid(`weights[${i}] (${name}) holds ${Buffer.byteLength(dataB64, "base64")} bytes, expected ${elements * 4}`);
    return { name, shape: [...expected.shape], dataB64 };
  });
}

/**
 * Parses and validates an artifact (JSON text or its UTF-8 bytes). Throws ModelError: "too-large"
 * above MAX_ARTIFACT_BYTES, "corrupt" when it is not JSON, "invalid" for a wrong format or shape,
 * "feature-version", "too-few-windows" (below `minWindows`, default MIN_TRAINING_WINDOWS),
 * "hash-mismatch" when the weights are not the ones the manifest hashed.
 */
export function parseArtifact(data: string | Uint8Array, o: { minWindows?: number } = {}): ModelArtifact {
  const minWindows = o.minWindows ?? MIN_TRAINING_WINDOWS;
  const size = typeof data === "string" ? (data.length > MAX_ARTIFACT_BYTES ? data.length : Buffer.byteLength(data, "utf8")) : data.byteLength;
  if (size > MAX_ARTIFACT_BYTES) throw new ModelError("too-large", `model artifact is ${size} bytes, more than the ${MAX_ARTIFACT_BYTES} accepted`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch (err) {
    throw new ModelError("corrupt", `model artifact is not valid JSON: ${err instanceof Error ? err.message.slice(0, 200) : String(err)}`, { cause: err });
  }
  const top = obj(parsed, "artifact");
  const manifest = parseManifest(field(top, "manifest"), minWindows);
  const weights = parseWeights(field(top, "weights"), manifest);
  const arrays = decodeWeights(weights);
  arrays.forEach((a, i) => {
    if (!a.every((x) => Number.isFinite(x))) invalid(`weights[${i}] (${weights[i]!.name}) holds a value that is not finite`);
  });
  const actual = weightsHash(arrays);
  if (actual !== manifest.weightsHash) {
    throw new ModelError("hash-mismatch", `model artifact's weights hash to ${actual.slice(0, 16)}…, the manifest says ${manifest.weightsHash.slice(0, 16)}…`);
  }
  return { manifest, weights };
}

/** The artifact as JSON text (what parseArtifact reads). */
export function serializeArtifact(a: ModelArtifact): string {
  return JSON.stringify(a);
}
