/**
 * The benchmark's baselines: the per-feature z-score (max |z|) and the EWMA control chart keyed by
 * stream, fitted on the same windows and thresholded by the same calibration rule as the model.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EwmaDetector, ZScoreDetector } from "../../models/baselines.js";
import { featureIndex } from "../../models/features.js";
import { syntheticInputs } from "./synthetic.js";

describe("baselines", () => {
  const baseline = syntheticInputs(2000, 1);
  const heldOut = syntheticInputs(1000, 2);

  it("z-score: max |z| over columns, calibrated like the model", () => {
    const z = ZScoreDetector.fit(baseline);
    const c = z.calibrate(z.statistic(heldOut));
    assert.equal(c.windows, 1000);
    const fresh = z.score(syntheticInputs(2000, 3));
    assert.ok(fresh.filter((s) => s >= 50).length / fresh.length < 0.02);
    const burn = z.score(syntheticInputs(20, 4, { metric: "cpu_seconds", factor: 20 }));
    assert.ok(burn.every((s) => s >= 50), burn.join(","));
    // Masked columns are left out, a fully masked window is 0.
    const v = Array.from(heldOut[0]!.vector);
    v[featureIndex("cpu_seconds.rate")] = Number.NaN;
    assert.ok(Number.isFinite(z.statistic([{ vector: v, seconds: 10 }])[0]!));
    assert.deepEqual(z.statistic([{ vector: [], seconds: 10 }]), [0]);
  });

  it("EWMA: the first step's statistic is |z| (σ_EWMA(1) = λ), state follows each stream", () => {
    const ewma = EwmaDetector.fit(baseline, { lambda: 0.2 });
    const z = ZScoreDetector.fit(baseline);
    const w = heldOut.slice(0, 1);
    assert.ok(Math.abs(ewma.statistic(w, ["a"])[0]! - z.statistic(w)[0]!) < 1e-9);

    // A step change in stream "b" builds up over windows; stream "c" with normal windows stays low.
    ewma.reset();
    const normal = syntheticInputs(30, 5);
    const burned = syntheticInputs(30, 6, { metric: "cpu_seconds", factor: 3 });
    const keysB = normal.map(() => "b");
    ewma.statistic(normal, keysB);
    const b = ewma.statistic(burned.slice(0, 5), keysB);
    const cStat = ewma.statistic(normal.slice(0, 5), ["c", "c", "c", "c", "c"]);
    assert.ok(b[4]! > b[0]!, `the chart accumulates: ${b.join(",")}`);
    assert.ok(b[4]! > 2 * Math.max(...cStat), `${b[4]} vs ${cStat.join(",")}`);
  });

  it("EWMA: calibrated on held-out streams, a burn crosses 50 within two windows", () => {
    const ewma = EwmaDetector.fit(baseline);
    ewma.calibrate(ewma.statistic(heldOut, heldOut.map((_, i) => `s${i % 10}`)));
    ewma.reset();
    const warm = syntheticInputs(20, 7);
    ewma.statistic(warm, warm.map(() => "x"));
    const s = ewma.score(syntheticInputs(2, 8, { metric: "cpu_seconds", factor: 20 }), ["x", "x"]);
    assert.ok(Math.max(...s) >= 50, s.join(","));
    assert.throws(() => EwmaDetector.fit(baseline, { lambda: 0 }), /lambda/);
  });
});
