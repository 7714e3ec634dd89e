/**
 * Alert hygiene (agent/scoring/hygiene.ts): warm-up, k-of-n persistence, hysteresis and cooldown,
 * on score sequences written out by hand.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULT_HYGIENE, INITIAL_HYGIENE, hygieneRules, nextHygiene, type HygieneRules } from "../../agent/scoring/hygiene.js";

/** The `alerting` flag after each score of `scores`, from the initial state. */
function run(scores: number[], rules: Partial<HygieneRules> = {}): boolean[] {
  const r = hygieneRules(rules);
  let s = INITIAL_HYGIENE;
  return scores.map((x) => (s = nextHygiene(s, x, r)).alerting);
}

describe("alert hygiene", () => {
  it("the defaults are warm-up 3, 2 of 3 at or above 50, clear below 35, cooldown 3", () => {
    assert.deepEqual(DEFAULT_HYGIENE, { warmupWindows: 3, k: 2, n: 3, raiseAt: 50, clearBelow: 35, cooldownWindows: 3 });
  });

  it("no alert during the warm-up, however high the scores", () => {
    assert.deepEqual(run([99, 99, 99]), [false, false, false]);
    // The window after the warm-up sees the highs kept during it.
    assert.deepEqual(run([99, 99, 99, 99]), [false, false, false, true]);
  });

  it("one spike never alerts; two of three at or above the raise level do", () => {
    const w = { warmupWindows: 0 };
    assert.deepEqual(run([10, 80, 10, 10, 80, 10], w), [false, false, false, false, false, false]);
    assert.deepEqual(run([10, 80, 10, 80], w), [false, false, false, true]);
    assert.deepEqual(run([10, 50, 50], w), [false, false, true], "50 itself counts");
    assert.deepEqual(run([49.9, 49.9, 49.9], w), [false, false, false]);
  });

  it("hysteresis: an alert holds while scores stay at or above the clear level", () => {
    assert.deepEqual(run([60, 60, 40, 36, 35, 34], { warmupWindows: 0 }), [false, true, true, true, true, false]);
  });

  it("cooldown: after clearing, no new alert for the cooldown's windows", () => {
    const seq = [60, 60, 10, 90, 90, 90, 90, 90];
    assert.deepEqual(run(seq, { warmupWindows: 0 }), [false, true, false, false, false, false, true, true]);
    assert.deepEqual(run(seq, { warmupWindows: 0, cooldownWindows: 0 }), [false, true, false, false, true, true, true, true]);
  });

  it("NaN and Infinity count as below every level, never as an alert", () => {
    assert.deepEqual(run([Number.NaN, Number.NaN, Number.NaN], { warmupWindows: 0, k: 1, n: 1 }), [false, false, false]);
    assert.deepEqual(run([60, 60, Number.NaN], { warmupWindows: 0 }), [false, true, false]);
  });

  it("rules that cannot hold are refused", () => {
    assert.throws(() => hygieneRules({ k: 3, n: 2 }), /persistence 3 of 2/);
    assert.throws(() => hygieneRules({ k: 0 }), /persistence/);
    assert.throws(() => hygieneRules({ clearBelow: 60, raiseAt: 50 }), /clear level 60 is above the raise level 50/);
    assert.throws(() => hygieneRules({ warmupWindows: 1.5 }), /whole numbers/);
  });

  it("the state is a value: an earlier state is not changed", () => {
    const s0 = nextHygiene(INITIAL_HYGIENE, 90);
    const copy = structuredClone(s0);
    nextHygiene(s0, 90);
    assert.deepEqual(s0, copy);
  });
});
