/**
 * Turns a telemetry window (WindowSummary) into the model's inputs: one per layer, the decoded
 * `layer-window-v2` vector and the window's length. Windows of another feature version give no
 * inputs (no model reads them); a layer whose vector is not FEATURE_COUNT numbers is left out.
 */

import type { WindowSummary } from "../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { FEATURE_COUNT, FEATURE_VERSION, decodeFeatures } from "./features.js";
import type { ModelInput } from "./types.js";

interface Stamp {
  seconds: bigint;
  nanos: number;
}

function toSeconds(t: Stamp | undefined): number {
  return t === undefined ? Number.NaN : Number(t.seconds) + t.nanos / 1e9;
}

/**
 * The model inputs of one window. `seconds` is end − start; a window without both times (or with
 * end ≤ start) gets NaN, and the model masks its per-second columns.
 */
export function inputsFromWindow(w: WindowSummary): { layerId: string; layerName: string; input: ModelInput }[] {
  if (w.featureVersion !== FEATURE_VERSION) return [];
  const length = toSeconds(w.end) - toSeconds(w.start);
  const seconds = Number.isFinite(length) && length > 0 ? length : Number.NaN;
  const out: { layerId: string; layerName: string; input: ModelInput }[] = [];
  for (const layer of w.layers) {
    if (layer.featuresF64le.byteLength !== FEATURE_COUNT * 8) continue;
    out.push({ layerId: layer.layerId, layerName: layer.layerName, input: { vector: decodeFeatures(layer.featuresF64le), seconds } });
  }
  return out;
}
