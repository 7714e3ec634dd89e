/**
 * The kernel lifecycle records without a kernel (agent/telemetry/lifecycle.ts): exits ordered by
 * kernel time and grouped by container, held a while for an unknown namespace then dropped, a
 * forked process's layer inherited up its chain of forks (never from a parent's later exec), and
 * every record bounded or expired.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ProcessExitEvent } from "../../agent/telemetry/exec-ebpf.js";
import { ProcessLifecycle } from "../../agent/telemetry/lifecycle.js";

const exit = (pid: number, mntns: number, monoNs: bigint): ProcessExitEvent => ({
  pid, ppid: 1, mntns, startTimeTicks: 100n, monoNs,
  cpuNs: 0, rchar: 0, wchar: 0, readBytes: 0, writeBytes: 0, minflt: 0, majflt: 0, nvcsw: 0, nivcsw: 0,
});

describe("ProcessLifecycle", () => {
  it("hands exits out in kernel time order, per container; holds an unknown namespace's, then drops them", () => {
    let now = 0;
    const known = new Map([[10, "a"], [20, "b"]]);
    const lc = new ProcessLifecycle({ containerOf: (ns) => known.get(ns), holdMs: 3000, now: () => now });
    // Per-CPU buffers deliver out of order.
    lc.onExit(exit(3, 10, 300n));
    lc.onExit(exit(1, 10, 100n));
    lc.onExit(exit(2, 20, 200n));
    lc.onExit(exit(4, 30, 50n));
    const out = lc.drain();
    assert.deepEqual([...out.keys()].sort(), ["a", "b"]);
    assert.deepEqual(out.get("a")?.map((e) => e.pid), [1, 3]);
    assert.deepEqual(out.get("b")?.map((e) => e.pid), [2]);
    assert.equal(lc.sizes.queued, 1, "the unknown namespace's exit waits");
    known.set(30, "c");
    assert.deepEqual(lc.drain().get("c")?.map((e) => e.pid), [4], "its container became known");
    lc.onExit(exit(5, 40, 60n));
    now = 3001;
    assert.equal(lc.drain().size, 0);
    assert.equal(lc.sizes.queued, 0);
    assert.equal(lc.stats.dropped, 1);
  });

  it("a process that did not exec has its parent's layer at fork time, up a chain of forks", () => {
    const lc = new ProcessLifecycle({ containerOf: () => "a" });
    lc.onExec(10, { containerId: "a", layerId: "shell-layer", startTimeTicks: 5n, monoNs: 100n });
    lc.onFork({ parent: 10, child: 11, mntns: 1, monoNs: 200n });
    lc.onFork({ parent: 11, child: 12, mntns: 1, monoNs: 300n });
    assert.equal(lc.inheritedLayer("a", 12, () => undefined), "shell-layer", "grandparent's exec");
    // The sampler's view of the parent counts when no exec of it is known.
    lc.onFork({ parent: 50, child: 51, mntns: 1, monoNs: 300n });
    assert.equal(lc.inheritedLayer("a", 51, (pid) => (pid === 50 ? "sampled-layer" : undefined)), "sampled-layer");
    // A parent that exec'd after the fork (or a recycled pid's exec) does not lend its new layer.
    lc.onFork({ parent: 60, child: 61, mntns: 1, monoNs: 300n });
    lc.onExec(60, { containerId: "a", layerId: "later-layer", startTimeTicks: 9n, monoNs: 400n });
    assert.equal(lc.inheritedLayer("a", 61, () => undefined), undefined);
    // Nor does another container's exec.
    lc.onExec(70, { containerId: "b", layerId: "other", startTimeTicks: 9n, monoNs: 100n });
    lc.onFork({ parent: 70, child: 71, mntns: 1, monoNs: 300n });
    assert.equal(lc.inheritedLayer("a", 71, () => undefined), undefined);
    assert.equal(lc.execOf(10, 5n)?.layerId, "shell-layer");
    assert.equal(lc.execOf(10, 6n), undefined, "another process with that pid");
  });

  it("bounds its records: forks expire, a fork storm evicts the oldest, a full queue drops the oldest exit", () => {
    let now = 0;
    const lc = new ProcessLifecycle({ containerOf: () => undefined, forkTtlMs: 60_000, now: () => now });
    for (let i = 1; i <= 70_000; i++) lc.onFork({ parent: 1, child: i + 1, mntns: 1, monoNs: BigInt(i) });
    assert.equal(lc.sizes.forks, 65_536);
    assert.equal(lc.stats.evicted, 70_000 - 65_536);
    now = 60_001;
    lc.drain();
    assert.equal(lc.sizes.forks, 0, "threads' fork records never end by an exit: they expire");
    for (let i = 1; i <= 50_001; i++) lc.onExit(exit(i, 1, BigInt(i)));
    assert.equal(lc.sizes.queued, 50_000);
    assert.equal(lc.stats.dropped, 1);
  });
});
