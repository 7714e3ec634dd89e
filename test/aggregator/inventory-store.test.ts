/**
 * Image inventories per reporting node: one node's report never replaces another's, the union is
 * what is scored, disagreement is said, and a store from before per-node inventories is moved.
 * (The cross-node attack over mTLS is in node-scope.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { ImageInventorySchema, PackageSchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { InventoryStore, UNKNOWN_NODE } from "../../aggregator/store/inventory-store.js";
import { keys } from "../../aggregator/store/keys.js";
import { withTempLevel } from "../harness/temp-level.js";

const image = `sha256:${"8".repeat(64)}`;
const inv = (...names: string[]) => create(ImageInventorySchema, { imageId: image, packages: names.map((name) => create(PackageSchema, { type: "npm", name, version: "1.0.0" })) });

describe("inventory store", () => {
  it("keeps each node's report, scores their union and names each node where they differ", async () => {
    await withTempLevel(async (db) => {
    const s = await InventoryStore.open(db);
    await s.put("node-b", inv("a", "b"));
    await s.put("node-a", inv("b", "c"));
    assert.deepEqual(s.get(image)?.inventory.packages.map((p) => p.name), ["b", "c", "a"], "node-a first (name order), then what only node-b saw");
    assert.equal(s.get(image)?.disagreement, "nodes disagree about this image's inventory (node node-a: 2 packages, node node-b: 2 packages); matched against all 3 they reported");
    const again = await InventoryStore.open(db);
    assert.deepEqual(again.ofNode(image, "node-b")?.packages.map((p) => p.name), ["a", "b"], "each node's report survives a restart as it was");
    assert.equal(again.get(image)?.inventory.packages.length, 3);
    });
  });

  it("keeps an inventory from before per-node inventories under no node until a node reports the image", async () => {
    await withTempLevel(async (db) => {
    await db.put(keys.inventory(image), toBinary(ImageInventorySchema, inv("old")));
    const s = await InventoryStore.open(db);
    assert.deepEqual(await db.keys(keys.inventoryRange).all(), [], "the old record moved");
    assert.deepEqual(s.get(image)?.inventory.packages.map((p) => p.name), ["old"]);
    await s.put("node-b", inv("new"));
    assert.deepEqual(s.get(image)?.inventory.packages.map((p) => p.name), ["new"], "a node's own report supersedes it");
    assert.equal(s.get(image)?.disagreement, undefined);
    const again = await InventoryStore.open(db);
    assert.deepEqual(again.ofNode(image, "node-b")?.packages.map((p) => p.name), ["new"]);
    assert.equal(again.ofNode(image, UNKNOWN_NODE), undefined);
    });
  });
});
