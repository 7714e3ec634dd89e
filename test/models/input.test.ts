/**
 * Model inputs from telemetry windows and the backend choice: a v2 window gives one input per layer
 * with the window's length, other feature versions and malformed vectors give none; the backend is
 * wasm here (tfjs-node cannot install offline), says why, and can be switched to cpu.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { LayerFeaturesSchema, WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { activeBackend, initBackend } from "../../models/backend.js";
import { fitCalibration } from "../../models/calibration.js";
import { COLUMN_NAMES } from "../../models/columns.js";
import { FEATURE_COUNT, FEATURE_VERSION, encodeFeatures } from "../../models/features.js";
import { inputsFromWindow } from "../../models/input.js";
import { AnomalyModel } from "../../models/model.js";
import { weightShapes, weightsHash } from "../../models/network.js";
import { trainModel } from "../../models/train.js";
import type { ModelArtifact } from "../../models/types.js";
import { syntheticInputs } from "./synthetic.js";

function window(featureVersion: string, startMs: number | undefined, endMs: number | undefined) {
  const v = Array.from({ length: FEATURE_COUNT }, (_, i) => i + 0.5);
  return create(WindowSummarySchema, {
    featureVersion,
    ...(startMs === undefined ? {} : { start: timestampFromMs(startMs) }),
    ...(endMs === undefined ? {} : { end: timestampFromMs(endMs) }),
    layers: [
      create(LayerFeaturesSchema, { layerId: "sha256:aa", layerName: "base", featuresF64le: encodeFeatures(v) }),
      create(LayerFeaturesSchema, { layerId: "sha256:bb", layerName: "short", featuresF64le: encodeFeatures(v.slice(0, 53)) }),
      create(LayerFeaturesSchema, { layerId: "sha256:cc", layerName: "odd", featuresF64le: new Uint8Array(13) }),
    ],
  });
}

describe("model inputs and backend", () => {
  it("decodes a v2 window's layers with its length", () => {
    const inputs = inputsFromWindow(window(FEATURE_VERSION, 1_000_000, 1_010_500));
    assert.equal(inputs.length, 1, "layers whose vector is not 54 numbers are left out");
    assert.equal(inputs[0]!.layerId, "sha256:aa");
    assert.equal(inputs[0]!.layerName, "base");
    assert.equal(inputs[0]!.input.seconds, 10.5);
    assert.equal(inputs[0]!.input.vector.length, FEATURE_COUNT);
    assert.equal(inputs[0]!.input.vector[53], 53.5);
  });

  it("gives nothing for another feature version, NaN seconds without times", () => {
    assert.deepEqual(inputsFromWindow(window("layer-window-v1", 0, 10_000)), []);
    assert.ok(Number.isNaN(inputsFromWindow(window(FEATURE_VERSION, undefined, 10_000))[0]!.input.seconds));
    assert.ok(Number.isNaN(inputsFromWindow(window(FEATURE_VERSION, 10_000, 10_000))[0]!.input.seconds));
  });

  it("loads an artifact without a backend but scores only once one runs", () => {
    // A hand-made artifact: zero weights (the reconstruction is the centre), unit scales.
    const arch = { inputs: COLUMN_NAMES.length, hidden: [4], activation: "relu" };
    const arrays = weightShapes(arch).map((w) => new Float32Array(w.shape.reduce((a, b) => a * b, 1)));
    const hash = weightsHash(arrays);
    const artifact: ModelArtifact = {
      manifest: {
        format: "shadowlayer-anomaly-model",
        formatVersion: 1,
        version: `2026-01-01T00:00:00.000Z-${hash.slice(0, 8)}`,
        featureVersion: FEATURE_VERSION,
        scope: { kind: "generic" },
        architecture: arch,
        normalisation: { columns: [...COLUMN_NAMES], center: COLUMN_NAMES.map(() => 0), scale: COLUMN_NAMES.map(() => 1), transform: "signed-log1p" },
        calibration: fitCalibration([1, 2, 3]),
        backend: "cpu",
        trainingWindows: 200,
        dataHash: "0".repeat(64),
        weightsHash: hash,
        createdAt: "2026-01-01T00:00:00.000Z",
        epochs: 0,
        finalLoss: 0,
      },
      weights: weightShapes(arch).map((w, i) => ({ name: w.name, shape: w.shape, dataB64: Buffer.from(arrays[i]!.buffer).toString("base64") })),
    };
    const model = AnomalyModel.fromArtifact(artifact);
    assert.equal(activeBackend(), undefined);
    assert.throws(() => model.score(syntheticInputs(1, 1)), (err: unknown) => err instanceof ShadowError && err.code === Code.FailedPrecondition && /initBackend/.test(err.message));
  });

  it("picks wasm when tfjs-node is missing, says why, and switches on request", async () => {
    assert.equal(activeBackend(), undefined);
    const warnings: unknown[] = [];
    const warn = console.warn;
    console.warn = (...a: unknown[]) => void warnings.push(a);
    try {
      const auto = await initBackend();
      assert.equal(auto.name, "wasm");
      assert.match(auto.reason, /^tfjs-node: .*; wasm: loaded \((simd|no simd)\)$/);
      assert.equal(await initBackend(), auto, "idempotent");
      assert.deepEqual(activeBackend(), auto);

      const model = await trainModel(syntheticInputs(250, 1), { scope: { kind: "generic" }, epochs: 2 });
      const inputs = syntheticInputs(5, 2);
      const onWasm = model.score(inputs);
      const cpu = await initBackend("cpu");
      assert.deepEqual(cpu, { name: "cpu", reason: "cpu: loaded" });
      const onCpu = AnomalyModel.fromArtifact(model.toArtifact()).score(inputs);
      onWasm.forEach((s, i) => assert.ok(Math.abs(s.error - onCpu[i]!.error) < 1e-4 * Math.max(1, s.error), "same errors on both backends"));
      assert.equal((await initBackend("auto")).name, "cpu", "auto keeps the running backend");
    } finally {
      console.warn = warn;
    }
    assert.ok(!warnings.some((w) => /tfjs-node/.test(String(w))), "no install-tfjs-node banner");
  });
});
