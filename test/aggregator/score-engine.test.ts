/**
 * What the score engine keeps across a restart (real level in a temp dir): inventories and the
 * policies an operator set, which a configured seed of the same name does not overwrite.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ImageInventorySchema, PackageSchema, type Policy } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { silentLogger } from "../../common/log.js";
import { policyFromInit } from "../../aggregator/index.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { ScoreEngine } from "../../aggregator/risk/score-engine.js";
import { GraphStore } from "../../aggregator/store/graph-store.js";
import { TelemetryStore } from "../../aggregator/store/telemetry-store.js";

const IMAGE = `sha256:${"e".repeat(64)}`;

describe("score engine state", () => {
  let dir: string;
  let store: GraphStore;
  let scores: ScoreEngine;

  const open = async (seeds: Policy[]) => {
    store = await GraphStore.open(join(dir, "store"));
    const telemetry = await TelemetryStore.open(store.db);
    const feeds = await FeedManager.open(store.db, [], silentLogger());
    scores = await ScoreEngine.open({ db: store.db, graphs: store, telemetry, feeds, log: silentLogger(), policies: seeds });
  };
  const close = async () => {
    scores.stop();
    await store.close();
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-score-engine-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps inventories and operator-set policies across a restart; a seed fills in only what is missing", async () => {
    const seeds = [policyFromInit({ name: "prod", rebuild_threshold: 40, switch_threshold: 80 }), policyFromInit({ name: "dev", rebuild_threshold: 90, switch_threshold: 95 })];
    await open(seeds.slice(0, 1));
    assert.deepEqual(scores.listPolicies().map((p) => [p.name, p.rebuildThreshold]), [["prod", 40], ["default", 60]]);
    await scores.setPolicy(policyFromInit({ name: "prod", rebuild_threshold: 70, switch_threshold: 80 }));
    await scores.putInventory(create(ImageInventorySchema, { imageId: IMAGE, packages: [create(PackageSchema, { type: "npm", name: "lodash", version: "4.17.20" })] }), "node-a");
    await close();

    await open(seeds);
    assert.deepEqual(scores.listPolicies().map((p) => [p.name, p.rebuildThreshold]), [["dev", 90], ["prod", 70], ["default", 60]]);
    assert.equal(scores.inventory(IMAGE)?.packages[0]?.name, "lodash");
    await scores.deletePolicy("dev");
    await assert.rejects(scores.deletePolicy("dev"), (err: unknown) => err instanceof ShadowError && err.code === Code.NotFound);
    await close();

    await open([]);
    assert.deepEqual(scores.listPolicies().map((p) => p.name), ["prod", "default"], "a deleted policy stays deleted");
    await close();
  });

  it("refuses a seed that breaks the policy rules", async () => {
    const bad = { ...policyFromInit({ name: "x", rebuild_threshold: 1, switch_threshold: 2 }), switchThreshold: -3 };
    await assert.rejects(open([bad]), /policy\.switch_threshold: expected a number from 0 to 100, got -3/);
    await store.close();
  });
});
