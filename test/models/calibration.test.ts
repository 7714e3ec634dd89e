/**
 * The error -> score mapping of models/ANOMALY.md: anchored at 50 on the held-out 99.5th
 * percentile, monotone, never above 100, a 10× error near 100; and on fresh draws from the
 * held-out distribution the share scoring ≥ 50 is 0.5% and the score quantiles follow the mapping.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { calibratedScore, fitCalibration, tailProbability } from "../../models/calibration.js";
import { seeded } from "./synthetic.js";

/** A heavy-tailed error distribution (log-normal), like reconstruction errors. */
function draws(n: number, seed: number): number[] {
  const next = seeded(seed);
  return Array.from({ length: n }, () => Math.exp(0.8 * Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next())));
}

describe("calibration", () => {
  const held = draws(20_000, 1);
  const c = fitCalibration(held);

  it("keeps 1001 sorted quantiles and the 99.5th percentile", () => {
    assert.equal(c.windows, 20_000);
    assert.equal(c.quantiles.length, 1001);
    assert.equal(c.quantiles[995], c.p995);
    const sorted = [...held].sort((a, b) => a - b);
    assert.equal(c.quantiles[0], sorted[0]);
    assert.equal(c.quantiles[1000], sorted.at(-1));
  });

  it("maps the documented table", () => {
    assert.equal(calibratedScore(c, c.p995), 50);
    const at = (u: number) => calibratedScore(c, c.quantiles[Math.round(u * 1000)]!);
    // score = 100 / (1 + p / 0.005) with p = 1 − u
    assert.ok(Math.abs(at(0.5) - 100 / 101) < 1e-9);
    assert.ok(Math.abs(at(0.9) - 100 / 21) < 1e-9);
    assert.ok(Math.abs(at(0.99) - 100 / 3) < 1e-9);
    assert.ok(Math.abs(at(0.999) - 100 / 1.2) < 1e-9);
    // beyond the held-out 99.9th percentile: p = 0.001 (q999 / e)^2
    const q999 = c.quantiles[999]!;
    for (const ratio of [1.5, 2, 10]) assert.ok(Math.abs(tailProbability(c, q999 * ratio) - 0.001 / ratio ** 2) < 1e-15);
    assert.ok(Math.abs(calibratedScore(c, 2 * q999) - 100 / 1.05) < 1e-9);
    assert.ok(calibratedScore(c, 10 * c.p995) >= 98.9, `10× p99.5 scores ${calibratedScore(c, 10 * c.p995)}`);
    assert.ok(calibratedScore(c, 1e12) <= 100);
    assert.equal(calibratedScore(c, Number.POSITIVE_INFINITY), 100);
    assert.ok(calibratedScore(c, 0) < 0.5 && calibratedScore(c, Number.NaN) < 0.5);
  });

  it("is monotone and within 0-100", () => {
    let last = -1;
    for (let e = 0; e < 50 * c.p995; e += c.p995 / 200) {
      const s = calibratedScore(c, e);
      assert.ok(s >= last - 1e-12 && s >= 0 && s <= 100, `score ${s} at ${e} after ${last}`);
      last = s;
    }
  });

  it("scores 0.5% of fresh windows from the same distribution ≥ 50, quantiles as documented", () => {
    const fresh = draws(100_000, 2);
    const scores = fresh.map((e) => calibratedScore(c, e)).sort((a, b) => a - b);
    // Threshold noise: sd of the tail share at the fitted p99.5 ≈ sqrt(0.005/20000) = 0.0005; fresh
    // sampling adds sqrt(0.005/100000) = 0.00022. 0.5% ± 0.2% is over 3.5 sd.
    const high = scores.filter((s) => s >= 50).length / scores.length;
    assert.ok(Math.abs(high - 0.005) < 0.002, `share ≥ 50: ${high}`);
    // The fresh u-quantile of the score should be 100 / (1 + (1 − u) / 0.005), compared in tail
    // probability: |p̂ − (1 − u)| within 3.5 sd of the two samples' noise.
    for (const u of [0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999]) {
      const s = scores[Math.floor(u * scores.length)]!;
      const p = (100 / s - 1) * 0.005;
      const sd = Math.sqrt(u * (1 - u) * (1 / 20_000 + 1 / 100_000));
      assert.ok(Math.abs(p - (1 - u)) < 3.5 * sd + 1e-4, `u=${u}: score ${s.toFixed(2)} is p=${p.toFixed(5)}`);
    }
  });

  it("is unbiased with a small held-out set: 0.5% of fresh windows ≥ 50 on average", () => {
    // 200 calibrations on 500 held-out draws each, 2,000 fresh draws each: one trial's share has
    // sd ≈ sqrt(0.005/500 + 0.005/2000) ≈ 0.0035, the mean of 200 ≈ 0.00025; ±0.001 is 4 sd.
    let sum = 0;
    for (let trial = 0; trial < 200; trial++) {
      const cal = fitCalibration(draws(500, 1000 + trial));
      sum += draws(2000, 5000 + trial).filter((e) => calibratedScore(cal, e) >= 50).length / 2000;
    }
    const mean = sum / 200;
    assert.ok(Math.abs(mean - 0.005) < 0.001, `mean share ≥ 50: ${mean}`);
  });

  it("needs a finite statistic", () => {
    assert.throws(() => fitCalibration([Number.NaN, Number.POSITIVE_INFINITY]), /at least one finite/);
    const one = fitCalibration([2]);
    assert.equal(one.p995, 2);
    assert.equal(calibratedScore(one, 2), 50);
    assert.ok(calibratedScore(one, 20) > 98);
  });
});
