/**
 * The anomaly benchmark's labelling rule and figures (pure code): which windows are positive,
 * normal or left out, window-level precision/recall/F1 without point adjustment, false positives
 * per 1,000 normal windows, detection latency, and the baseline split.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { coverage, detection, EXCLUDED, labelWindows, latencies, splitBaseline, type InjectionRecord, type LayerWindowRecord } from "./anomaly-metrics.js";

function win(container: string, layerId: string, start: number): LayerWindowRecord {
  return { container, containerId: container, layerId, layerName: layerId, start, end: start + 2000, seconds: 2, vector: [] };
}

const inj: InjectionRecord = { name: "cpu-burn", container: "web-1", layers: ["web"], declaredLayer: "web", observedLayers: ["web", "rw"], t0: 10_050, t1: 15_000, exitCode: 137 };

describe("anomaly benchmark figures", () => {
  it("labels the injected layer's overlapping windows positive, other observed layers left out, the rest normal", () => {
    const ws = [win("web-1", "web", 8000), win("web-1", "web", 10_000), win("web-1", "web", 14_000), win("web-1", "web", 15_000), win("web-1", "rw", 10_000), win("web-1", "rw", 20_000), win("web-2", "web", 12_000), win("web-1", "base", 12_000)];
    assert.deepEqual(labelWindows(ws, [inj]), [-1, 0, 0, -1, EXCLUDED, -1, -1, -1]);
  });

  it("counts window by window, without point adjustment", () => {
    const d = detection([true, true, true, true, false, false, false, false], [true, false, false, false, true, false, false, false]);
    assert.deepEqual([d.tp, d.fp, d.fn, d.tn], [1, 1, 3, 3]);
    assert.equal(d.precision, 0.5);
    assert.equal(d.recall, 0.25);
    assert.ok(Math.abs(d.f1 - 1 / 3) < 1e-12);
    assert.equal(d.fp_per_1000, 250);
  });

  it("latency is the first detected window's index, an undetected injection counts its length", () => {
    const ws = [win("web-1", "web", 14_000), win("web-1", "web", 10_000), win("web-1", "web", 12_000)];
    const other: InjectionRecord = { ...inj, name: "memory-leak", t0: 30_000, t1: 40_000 };
    const ws2 = [...ws, win("web-1", "web", 30_000), win("web-1", "web", 32_000)];
    const label = labelWindows(ws2, [inj, other]);
    const l = latencies(ws2, label, [true, false, false, false, false], [inj, other]);
    assert.deepEqual(
      l.map((x) => [x.windows, x.firstDetected, x.latency]),
      [
        [3, 2, 2],
        [2, null, 2],
      ],
    );
  });

  it("coverage is the share of a window the injection ran in", () => {
    assert.equal(coverage(win("web-1", "web", 14_000), inj), 0.5);
    assert.equal(coverage(win("web-1", "web", 10_000), inj), 0.975);
    assert.equal(coverage(win("web-1", "web", 20_000), inj), 0);
  });

  it("holds out every n-th baseline window", () => {
    const s = splitBaseline([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 5);
    assert.deepEqual(s.heldOut, [4, 9]);
    assert.deepEqual(s.heldOutIdx, [4, 9]);
    assert.equal(s.fit.length, 8);
  });
});
