/**
 * Which strategy a job gets: advisories try rebase, patch, recipe; drift and anomaly try restore
 * first; an operator's choice is honoured only when it applies; when none applies the message
 * names each strategy and, where it can tell, why not.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { chooseStrategy } from "../../aggregator/rebuild/strategy-choice.js";
import type { ImageFacts, Strategy, StrategyName } from "../../aggregator/rebuild/types.js";

const facts: ImageFacts = { imageId: "sha256:1", name: "app:1", labels: {}, diffIds: [], history: [], repoDigests: [], os: "linux", architecture: "amd64" };

/** A strategy that applies when `ok` says so; it is never run here. */
function strategy(name: StrategyName, ok: boolean, refusal?: string): Strategy {
  return {
    name,
    applies: () => (ok ? `${name} fits` : undefined),
    ...(refusal !== undefined ? { refusal: () => refusal } : {}),
    run: () => Promise.reject(new Error("not run in this test")),
  };
}

const ctx = { baseMap: {} };

describe("strategy choice", () => {
  it("advisories: rebase before patch before recipe; behaviour reasons: restore first", () => {
    const all = [strategy("recipe", true), strategy("patch", true), strategy("rebase", true), strategy("restore", true)];
    assert.equal(chooseStrategy(all, facts, ["CVE-1"], ctx).strategy.name, "rebase");
    assert.equal(chooseStrategy([strategy("recipe", true), strategy("patch", true), strategy("rebase", false)], facts, ["CVE-1"], ctx).strategy.name, "patch");
    assert.equal(chooseStrategy(all, facts, ["drift"], ctx).strategy.name, "restore");
    assert.equal(chooseStrategy(all, facts, ["drift", "CVE-1"], ctx).strategy.name, "restore", "a tampered image is restored before anything is built on it");
    assert.equal(chooseStrategy([strategy("rebase", true), strategy("recipe", true)], facts, ["performance-anomaly"], ctx).strategy.name, "recipe", "rebase keeps the suspect layers");
  });

  it("a forced strategy must apply, and says why not when it can", () => {
    const all = [strategy("rebase", true), strategy("recipe", false, "no --recipe-root is configured")];
    assert.equal(chooseStrategy(all, facts, ["CVE-1"], ctx, "rebase").reason, "forced: rebase fits");
    assert.throws(() => chooseStrategy(all, facts, ["CVE-1"], ctx, "recipe"), /strategy recipe does not apply to app:1: no --recipe-root is configured/);
    assert.throws(() => chooseStrategy(all, facts, ["CVE-1"], ctx, "magic"), /unknown strategy "magic"/);
  });

  it("none applies: each one tried is named with its reason", () => {
    const none = [strategy("rebase", false), strategy("patch", false, "no package mirror is configured"), strategy("recipe", false)];
    assert.throws(() => chooseStrategy(none, facts, ["CVE-1"], ctx), /no strategy can rebuild app:1: tried rebase, patch \(no package mirror is configured\), recipe\./);
  });
});
