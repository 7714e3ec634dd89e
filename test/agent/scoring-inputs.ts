/**
 * Synthetic model inputs and windows for the scoring tests: a steady baseline (every feature
 * around a level of its own, a few percent of noise, from a seeded generator) and a CPU burn.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { FEATURE_COUNT, FEATURE_NAMES, FEATURE_VERSION, encodeFeatures } from "../../models/features.js";
import type { ModelInput } from "../../models/types.js";
import { LayerFeaturesSchema, WindowSummarySchema, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";

import { seededRandom as seeded } from "../../models/random.js";

export { seeded };

/** One steady layer-window's vector; `cpuTimes` multiplies the cpu_seconds features (a burn). */
export function baselineVector(rand: () => number, cpuTimes = 1): number[] {
  return FEATURE_NAMES.map((name, i) => {
    const level = 1 + (i % 7) * 3;
    const v = level * (1 + 0.05 * (rand() - 0.5));
    return name.startsWith("cpu_seconds") ? v * cpuTimes : v;
  });
}

export function baselineInputs(n: number, seed = 1): ModelInput[] {
  const rand = seeded(seed);
  return Array.from({ length: n }, () => ({ vector: baselineVector(rand), seconds: 10 }));
}

/** A window of one container with the given layers' vectors (10 s long, ending at `endMs`). */
export function windowOf(containerId: string, layers: Array<{ id: string; vector: number[] }>, endMs = Date.now()): WindowSummary {
  for (const l of layers) if (l.vector.length !== FEATURE_COUNT) throw new RangeError("vector of the wrong length");
  return create(WindowSummarySchema, {
    node: "test-node",
    containerId,
    containerName: containerId,
    start: timestampFromMs(endMs - 10_000),
    end: timestampFromMs(endMs),
    ticks: 10,
    featureVersion: FEATURE_VERSION,
    layers: layers.map((l) => create(LayerFeaturesSchema, { layerId: l.id, layerName: l.id, featuresF64le: encodeFeatures(l.vector) })),
  });
}
