/**
 * Alert hygiene per stream: warm-up, k-of-n persistence (one spike never alerts), hysteresis and a
 * cooldown after an alert clears.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AlertGate } from "../../models/alerting.js";

const feed = (gate: AlertGate, key: string, scores: number[]) => scores.map((s) => gate.update(key, s));

describe("alert gate", () => {
  it("ignores the warm-up and single spikes, alerts on 2 of 3", () => {
    const gate = new AlertGate();
    const warm = feed(gate, "c/l", [100, 100, 100]);
    assert.ok(warm.every((s) => !s.counted && !s.alerting));
    assert.ok(feed(gate, "c/l", [10, 90, 10, 10, 90, 10, 10]).every((s) => s.counted && !s.alerting), "isolated spikes");
    const burst = feed(gate, "c/l", [90, 95]);
    assert.deepEqual(burst.map((s) => s.alerting), [false, true], "the second anomalous window raises");
    assert.equal(burst[1]!.changed, true);
    assert.ok(feed(gate, "other", [0, 0, 0, 90, 90]).at(-1)!.alerting, "streams are separate");
  });

  it("clears with hysteresis, then cools down", () => {
    const gate = new AlertGate({ warmupWindows: 0, cooldownWindows: 2 });
    feed(gate, "s", [90, 90]);
    const fall = feed(gate, "s", [45, 45, 30, 30]);
    assert.deepEqual(fall.map((s) => s.alerting), [true, true, true, false], "45 ≥ clear 40 keeps it; fewer than 2 of 3 ≥ 40 clears");
    assert.equal(fall[3]!.changed, true);
    const again = feed(gate, "s", [90, 90, 90]);
    assert.deepEqual(again.map((s) => s.alerting), [false, false, true], "two windows of cooldown");
    gate.forget("s");
    assert.equal(gate.update("s", 90).alerting, false);
  });

  it("rejects a policy that cannot work", () => {
    assert.throws(() => new AlertGate({ k: 4, n: 3 }), /k ≤ n/);
    assert.throws(() => new AlertGate({ clear: 60 }), /clear 60 is above raise 50/);
    assert.throws(() => new AlertGate({ warmupWindows: -1 }), /whole numbers/);
  });
});
