/**
 * The autoencoder end to end on synthetic layer windows: training is deterministic and bounded,
 * fresh windows from the training distribution score ≥ 50 about as often as the calibration says
 * (0.5%), a CPU burn (cpu_seconds ×20) scores ≥ 50 with CPU named first, unavailable or impossible
 * inputs are masked and counted rather than read as idle, and the artifact round trip keeps scores.
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { ModelError, parseArtifact, serializeArtifact } from "../../models/artifact.js";
import { initBackend } from "../../models/backend.js";
import { COLUMN_NAMES } from "../../models/columns.js";
import { FEATURE_COUNT, FEATURE_VERSION, featureIndex } from "../../models/features.js";
import { AnomalyModel } from "../../models/model.js";
import { trainModel } from "../../models/train.js";
import type { TrainProgress } from "../../models/types.js";
import { syntheticInputs } from "./synthetic.js";

describe("anomaly model", () => {
  let model: AnomalyModel;
  const progress: TrainProgress[] = [];
  let trainSeconds = 0;

  before(async () => {
    await initBackend();
    const t0 = performance.now();
    model = await trainModel(syntheticInputs(2500, 1), { scope: { kind: "image", imageId: "sha256:abc" }, epochs: 8, seed: 7, onProgress: (p) => progress.push(p) });
    trainSeconds = (performance.now() - t0) / 1000;
  });

  it("trains with a manifest that says what it was trained on", () => {
    const m = model.manifest;
    assert.equal(m.featureVersion, FEATURE_VERSION);
    assert.equal(m.trainingWindows, 2500);
    assert.equal(m.calibration.windows, 500, "20% held out");
    assert.equal(m.calibration.quantiles.length, 1001);
    assert.deepEqual(m.normalisation.columns, [...COLUMN_NAMES]);
    assert.equal(m.architecture.inputs, COLUMN_NAMES.length);
    assert.match(m.version, /^\d{4}-\d\d-\d\dT.*-[0-9a-f]{8}$/);
    assert.ok(m.version.endsWith(m.weightsHash.slice(0, 8)));
    assert.match(m.dataHash, /^[0-9a-f]{64}$/);
    assert.equal(progress.length, m.epochs);
    assert.ok(m.epochs >= 1 && m.epochs <= 8);
    assert.ok(progress.at(-1)!.loss < progress[0]!.loss, "the loss falls");
    assert.ok(trainSeconds < 20, `trained 2,500 windows in ${trainSeconds.toFixed(1)} s`);
  });

  it("is deterministic for a seed", async () => {
    const again = await trainModel(syntheticInputs(400, 1), { scope: { kind: "generic" }, epochs: 2, seed: 3, minWindows: 200 });
    const twice = await trainModel(syntheticInputs(400, 1), { scope: { kind: "generic" }, epochs: 2, seed: 3, minWindows: 200 });
    assert.equal(again.manifest.weightsHash, twice.manifest.weightsHash);
    assert.equal(again.manifest.dataHash, twice.manifest.dataHash);
    again.dispose();
    twice.dispose();
  });

  it("scores fresh baseline windows ≥ 50 about 0.5% of the time", () => {
    // 500 held-out windows fix the threshold: the tail share above it has sd ≈ sqrt(0.005/500) ≈ 0.003,
    // 4,000 fresh windows add sqrt(0.005/4000) ≈ 0.001; 0.5% + 3 sd ≈ 1.5%.
    const scores = model.score(syntheticInputs(4000, 99)).map((s) => s.score);
    const high = scores.filter((s) => s >= 50).length / scores.length;
    assert.ok(high <= 0.015, `share ≥ 50: ${high}`);
    const sorted = [...scores].sort((a, b) => a - b);
    // The fresh u-quantile's score, read back as a tail probability through the documented mapping
    // (p = (100 / score − 1) × 0.005), is 1 − u within 3 sd of the two samples' noise.
    for (const u of [0.5, 0.8, 0.9, 0.95, 0.99]) {
      const p = (100 / sorted[Math.floor(u * sorted.length)]! - 1) * 0.005;
      const sd = Math.sqrt(u * (1 - u) * (1 / 500 + 1 / 4000));
      assert.ok(Math.abs(p - (1 - u)) < 3 * sd, `u=${u}: p=${p}`);
    }
    assert.ok(sorted[2000]! < 5, `median score ${sorted[2000]} is low`);
    assert.ok(scores.every((s) => s >= 0 && s <= 100));
  });

  it("scores a CPU burn ≥ 50 and names CPU first", () => {
    const burned = model.score(syntheticInputs(50, 5, { metric: "cpu_seconds", factor: 20 }));
    for (const s of burned) {
      assert.ok(s.score >= 50, `score ${s.score}`);
      assert.match(s.reasons[0]!.feature, /^cpu_seconds\./);
      assert.ok(s.reasons[0]!.sigma > 3, `sigma ${s.reasons[0]!.sigma}`);
      assert.ok(s.reasons[0]!.value > 5 * s.reasons[0]!.baseline, "value and baseline are in the feature's unit");
      assert.ok(s.reasons.length <= 5);
      const share = s.reasons.reduce((a, r) => a + r.contribution, 0);
      assert.ok(share > 0.5 && share <= 1 + 1e-9);
    }
  });

  it("masks NaN, Infinity and negative counters and counts them", () => {
    const [base] = syntheticInputs(1, 11);
    const v = Array.from(base!.vector);
    v[featureIndex("cpu_seconds.rate")] = Number.NaN;
    v[featureIndex("read_bytes.rate")] = Number.POSITIVE_INFINITY;
    v[featureIndex("write_bytes.max")] = -5e9; // a counter reset
    v[featureIndex("rss_bytes.rate")] = -1000; // a gauge may shrink: not masked
    const [s] = model.score([{ vector: v, seconds: 10 }]);
    assert.equal(s!.masked, 3);
    assert.ok(Number.isFinite(s!.score) && Number.isFinite(s!.error));
    for (const r of s!.reasons) assert.ok(!["cpu_seconds.rate", "read_bytes.rate", "write_bytes.max"].includes(r.feature));
    assert.ok(s!.score < 50, `a window with three unavailable features is not anomalous (${s!.score})`);

    const [empty] = model.score([{ vector: new Array(FEATURE_COUNT).fill(Number.NaN), seconds: 10 }]);
    assert.deepEqual(empty, { score: 0, error: 0, reasons: [], masked: COLUMN_NAMES.length });
    const [short] = model.score([{ vector: [], seconds: 0 }]);
    assert.equal(short!.masked, COLUMN_NAMES.length, "absent entries and a zero-length window are masked");
  });

  it("trains on windows with unavailable features, leaving them out of the loss", async () => {
    const inputs = syntheticInputs(400, 21).map((input, i) => {
      const v = Array.from(input.vector);
      if (i % 3 === 0) v[featureIndex("read_bytes.rate")] = Number.NaN;
      if (i % 5 === 0) v[featureIndex("ctx_switches_voluntary.max")] = -1;
      if (i % 7 === 0) v[featureIndex("rss_bytes.mean")] = Number.POSITIVE_INFINITY;
      return { vector: v, seconds: i % 11 === 0 ? Number.NaN : input.seconds };
    });
    const m = await trainModel(inputs, { scope: { kind: "generic" }, epochs: 3 });
    assert.ok(Number.isFinite(m.manifest.finalLoss) && m.manifest.finalLoss < 1, `loss ${m.manifest.finalLoss}`);
    assert.ok(m.manifest.normalisation.center.every(Number.isFinite) && m.manifest.normalisation.scale.every((x) => x > 0));
    const scored = m.score(inputs.slice(0, 12));
    assert.equal(scored[0]!.masked, 3 + 5, "NaN, reset, Infinity and the 5 per-second counts of a window without a length");
    assert.ok(scored.every((x) => Number.isFinite(x.score)));
    m.dispose();
  });

  it("keeps its scores through the artifact", () => {
    const text = serializeArtifact(model.toArtifact());
    const loaded = AnomalyModel.fromArtifact(text);
    const fromBytes = AnomalyModel.fromArtifact(new TextEncoder().encode(text));
    const fromObject = AnomalyModel.fromArtifact(parseArtifact(text));
    const inputs = syntheticInputs(20, 3);
    const a = model.score(inputs);
    for (const other of [loaded, fromBytes, fromObject]) {
      assert.deepEqual(other.manifest, model.manifest);
      assert.deepEqual(other.score(inputs), a);
      other.dispose();
    }
  });

  it("refuses to train on too few windows", async () => {
    await assert.rejects(trainModel(syntheticInputs(150, 1), { scope: { kind: "generic" } }), (err: unknown) => err instanceof ModelError && err.reason === "too-few-windows" && /200/.test(err.message));
  });
});
