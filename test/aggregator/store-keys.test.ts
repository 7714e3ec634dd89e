/**
 * The store's keys are part of the on-disk format: these are the exact strings an existing data
 * directory holds, so a change that would orphan its data fails here.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { keys, SCHEMA_VERSION } from "../../aggregator/store/keys.js";

describe("store keys", () => {
  it("keep their bytes", () => {
    assert.equal(keys.graph("abc"), "graph!abc");
    assert.deepEqual(keys.graphRange, { gt: "graph!", lt: "graph!\xff" });
    assert.equal(keys.node("n1"), "node!n1");
    assert.deepEqual(keys.nodeRange, { gt: "node!", lt: "node!\xff" });
    assert.equal(keys.spoolSeq("sp"), "spool!sp");
    assert.deepEqual(keys.spoolSeqRange, { gt: "spool!", lt: "spool!\xff" });
    assert.equal(keys.nodeSpoolSeq("n1", "sp"), "nspool!n1!sp");
    assert.deepEqual(keys.nodeSpoolSeqRange, { gt: "nspool!", lt: "nspool!\xff" });
    assert.equal(keys.window("n1", "sp", 0x1fn, 2), "win!n1!sp!000000000000001f!0002");
    assert.deepEqual(keys.windowRange, { gt: "win!", lt: "win!\xff" });
    assert.deepEqual(keys.windowsOfNode("n1"), { gt: "win!n1!", lt: "win!n1!\xff" });
    assert.equal(keys.detection("n1", "sp", 255n), "det!n1!sp!00000000000000ff");
    assert.deepEqual(keys.detectionRange, { gt: "det!", lt: "det!\xff" });
    assert.deepEqual(keys.detectionsOfNode("n1"), { gt: "det!n1!", lt: "det!n1!\xff" });
    assert.equal(keys.inventory("sha256:aa"), "inv!sha256:aa");
    assert.deepEqual(keys.inventoryRange, { gt: "inv!", lt: "inv!\xff" });
    assert.equal(keys.nodeInventory("sha256:aa", "n1"), "ninv!sha256:aa!n1");
    assert.deepEqual(keys.nodeInventoryRange, { gt: "ninv!", lt: "ninv!\xff" });
    assert.equal(keys.policy("prod"), "policy!prod");
    assert.deepEqual(keys.policyRange, { gt: "policy!", lt: "policy!\xff" });
    assert.equal(keys.feedMeta("osv-2"), "feed!osv-2!meta");
    assert.equal(keys.feedChunk("osv", 10, 300), "feed!osv!g0000000a!0000012c");
    assert.deepEqual(keys.feedGeneration("osv", 10), { gt: "feed!osv!g0000000a!", lt: "feed!osv!g0000000a!\xff" });
    assert.equal(keys.rebuild("0123abcd"), "rebuild!0123abcd");
    assert.deepEqual(keys.rebuildRange, { gt: "rebuild!", lt: "rebuild!\xff" });
    assert.equal(keys.switchover("so-0123"), "swo!so-0123");
    assert.deepEqual(keys.switchoverRange, { gt: "swo!", lt: "swo!\xff" });
    assert.equal(keys.schema, "meta!schema");
    assert.equal(SCHEMA_VERSION, "1");
  });

  it("give back the ids they hold", () => {
    assert.equal(keys.spoolIdOf(keys.spoolSeq("a-b!c")), "a-b!c");
    assert.equal(keys.nodeOfTelemetry(keys.window("node-1", "sp", 1n, 0)), "node-1");
    assert.equal(keys.nodeOfTelemetry(keys.detection("node-2", "sp", 1n)), "node-2");
    assert.deepEqual(keys.originOfTelemetry(keys.window("node-1", "a!b", 0x1fn, 2)), { node: "node-1", spoolId: "a!b", seq: 0x1fn });
    assert.deepEqual(keys.originOfTelemetry(keys.detection("node-2", "sp", 255n)), { node: "node-2", spoolId: "sp", seq: 255n });
    assert.equal(keys.nodeOfInventory(keys.nodeInventory("sha256:aa", "node-3")), "node-3");
    assert.equal(keys.nodeOfInventory(keys.nodeInventory("sha256:aa", "")), "");
  });

  it("keep one feed's generations apart, and each feed's chunks in its generation's range", () => {
    const g = keys.feedGeneration("osv", 1);
    const inRange = (k: string, r: { gt: string; lt: string }) => k > r.gt && k < r.lt;
    assert.ok(inRange(keys.feedChunk("osv", 1, 0), g));
    assert.ok(inRange(keys.feedChunk("osv", 1, 0xffffffff), g));
    assert.ok(!inRange(keys.feedChunk("osv", 2, 0), g));
    assert.ok(!inRange(keys.feedChunk("osv-2", 1, 0), g));
    assert.ok(!inRange(keys.feedMeta("osv"), g));
  });

  it("name as orphans every generation of a feed but the current one, and nothing else", () => {
    const orphan = (k: string, current: number) => keys.feedOrphans("osv", current).some((r) => k > r.gt && k < r.lt);
    for (const current of [0, 1, 10, 0xfffffffe]) {
      assert.equal(orphan(keys.feedChunk("osv", current, 0), current), current === 0, `gen ${current}`);
      assert.equal(orphan(keys.feedChunk("osv", current, 0xffffffff), current), current === 0);
      if (current > 0) assert.ok(orphan(keys.feedChunk("osv", current - 1, 0xffffffff), current));
      assert.ok(orphan(keys.feedChunk("osv", current + 1, 0), current));
      assert.ok(!orphan(keys.feedMeta("osv"), current));
      assert.ok(!orphan(keys.feedChunk("osv-2", current + 1, 0), current));
    }
  });
});
