/**
 * The telemetry spool in the agent's state database: order, bound and persistence, and the
 * upgrade from the earlier layout (a spool database of its own, `<agent-dir>/spool`, captured in
 * test/fixtures/agent/legacy-spool as the previous version wrote it: items 1-12 appended with a
 * bound of 10, acknowledged through 5, so items 6-12 wait and 2 were dropped).
 */
import assert from "node:assert/strict";
import { cp, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { Level } from "level";
import { Spool, spoolKeys } from "../../agent/link/spool.js";
import { AgentState } from "../../agent/state/agent-state.js";
import { silentLogger } from "../../common/log.js";
import { TelemetryItemSchema, WindowSummarySchema, type TelemetryItem } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";

const LEGACY = fileURLToPath(new URL("../../../test/fixtures/agent/legacy-spool", import.meta.url));
const LEGACY_ID = "5d2669a3-d406-4623-8c9f-ab749061723c";

const tmp = await mkdtemp(join(tmpdir(), "sl-spool-"));
after(() => rm(tmp, { recursive: true, force: true }));

async function openState(dir: string): Promise<AgentState> {
  const s = new AgentState(dir, silentLogger());
  await s.start();
  return s;
}

const windowOf = (i: TelemetryItem) => (i.body.case === "windows" ? i.body.value.windows[0]?.containerId : undefined);
const exists = (p: string) => stat(p).then(() => true, () => false);

describe("spool (level)", () => {
  it("numbers items in order, keeps them across a reopen, forgets acked ones", async () => {
    const dir = join(tmp, "spool-a");
    let state = await openState(dir);
    let s = await Spool.open(state.spool);
    const id = s.id;
    for (let i = 0; i < 5; i++) await s.append({ case: "windows", value: { windows: [create(WindowSummarySchema, { containerId: String(i) })] } });
    await s.ack(2n);
    assert.equal(s.pending, 3);
    await s.close();
    await state.stop();
    state = await openState(dir);
    s = await Spool.open(state.spool);
    assert.equal(s.id, id, "the spool id survives a restart");
    assert.equal(s.pending, 3);
    const items = await s.readAfter(0n, 10);
    assert.deepEqual(items.map((i) => [i.spoolSeq, windowOf(i)]), [[3n, "2"], [4n, "3"], [5n, "4"]]);
    assert.equal(await s.append({ case: "windows", value: { windows: [] } }), 6n, "numbering continues");
    await s.close();
    await state.stop();
  });

  it("is bounded: the oldest are dropped first and counted", async () => {
    const state = await openState(join(tmp, "spool-b"));
    const s = await Spool.open(state.spool, { maxItems: 3 });
    for (let i = 0; i < 7; i++) await s.append({ case: "windows", value: { windows: [create(WindowSummarySchema, { containerId: String(i) })] } });
    assert.equal(s.pending, 3);
    assert.equal(s.dropped, 4);
    const left = await s.readAfter(0n, 10);
    assert.deepEqual(left.map((i) => i.spoolSeq), [5n, 6n, 7n]);
    await s.close();
    await state.stop();
  });
});

describe("upgrade from the earlier layout", () => {
  it("carries the undelivered items over in order, under the same spool id, and drops the old inventory cache", async () => {
    const agentDir = join(tmp, "agent-upgrade");
    await cp(LEGACY, join(agentDir, "spool"), { recursive: true });
    const oldInventory = new Level<string, string>(join(agentDir, "inventory"));
    await oldInventory.put("v1!sha256:x", "cached");
    await oldInventory.close();

    let state = await openState(agentDir);
    assert.equal(await exists(join(agentDir, "spool")), false, "the old spool directory is removed");
    assert.equal(await exists(join(agentDir, "inventory")), false, "the old inventory cache is dropped");
    let s = await Spool.open(state.spool);
    assert.equal(s.id, LEGACY_ID, "the aggregator still recognises items it stored before the upgrade");
    assert.equal(s.pending, 7);
    assert.equal(s.dropped, 2);
    const items = await s.readAfter(0n, 100);
    assert.deepEqual(
      items.map((i) => [i.spoolSeq, windowOf(i), i.spoolId]),
      [5, 6, 7, 8, 9, 10, 11].map((n) => [BigInt(n + 1), `c${n}`, LEGACY_ID]),
    );
    assert.equal(await state.spool.get(spoolKeys.carried), undefined, "no carry-over mark is left");
    assert.equal(await s.append({ case: "windows", value: { windows: [] } }), 13n, "numbering continues after the old items");
    await s.close();
    await state.stop();

    // A second start finds nothing to carry and changes nothing.
    state = await openState(agentDir);
    s = await Spool.open(state.spool);
    assert.equal(s.pending, 8);
    await s.close();
    await state.stop();
  });

  it("resumes a carry-over cut short, repeating and skipping nothing", async () => {
    const agentDir = join(tmp, "agent-resume");
    // What a crash after the first chunk leaves: the old spool's id, items 6-8 and the mark.
    let state = await openState(agentDir);
    await cp(LEGACY, join(tmp, "legacy-copy"), { recursive: true });
    const copy = new Level<string, Uint8Array>(join(tmp, "legacy-copy"), { keyEncoding: "utf8", valueEncoding: "view" });
    const enc = new TextEncoder();
    const firstChunk: Array<{ type: "put"; key: string; value: Uint8Array }> = [];
    for await (const [key, value] of copy.iterator({ gte: spoolKeys.item(6n), lte: spoolKeys.item(8n) })) firstChunk.push({ type: "put", key, value });
    await copy.close();
    assert.equal(firstChunk.length, 3);
    await state.spool.batch([
      ...firstChunk,
      { type: "put", key: spoolKeys.id, value: enc.encode(LEGACY_ID) },
      { type: "put", key: spoolKeys.dropped, value: enc.encode("2") },
      { type: "put", key: spoolKeys.carried, value: enc.encode(JSON.stringify({ from: LEGACY_ID, through: "8" })) },
    ]);
    await state.stop();

    await cp(LEGACY, join(agentDir, "spool"), { recursive: true });
    state = await openState(agentDir);
    const s = await Spool.open(state.spool);
    const items = await s.readAfter(0n, 100);
    assert.deepEqual(items.map((i) => windowOf(i)), ["c5", "c6", "c7", "c8", "c9", "c10", "c11"]);
    assert.equal(s.dropped, 2, "the dropped count is taken once");
    assert.equal(await exists(join(agentDir, "spool")), false);
    await s.close();
    await state.stop();
  });

  it("renumbers the old items after a spool that already has an id of its own", async () => {
    const agentDir = join(tmp, "agent-renumber");
    let state = await openState(agentDir);
    let s = await Spool.open(state.spool);
    const ownId = s.id;
    await s.append({ case: "windows", value: { windows: [create(WindowSummarySchema, { containerId: "new-1" })] } });
    await s.append({ case: "windows", value: { windows: [create(WindowSummarySchema, { containerId: "new-2" })] } });
    await s.close();
    await state.stop();

    await cp(LEGACY, join(agentDir, "spool"), { recursive: true });
    state = await openState(agentDir);
    s = await Spool.open(state.spool);
    assert.equal(s.id, ownId);
    const items = await s.readAfter(0n, 100);
    assert.deepEqual(
      items.map((i) => [i.spoolSeq, windowOf(i)]),
      [[1n, "new-1"], [2n, "new-2"], ...[5, 6, 7, 8, 9, 10, 11].map((n, k) => [BigInt(k + 3), `c${n}`])],
    );
    for (const i of items) assert.equal(i.spoolId, ownId, "carried items are under the spool's own id");
    // The stored bytes agree with what readAfter decoded (the tail cache is empty after a reopen).
    const raw = await state.spool.get(spoolKeys.item(3n));
    assert.ok(raw !== undefined);
    assert.equal(fromBinary(TelemetryItemSchema, raw).spoolSeq, 3n);
    assert.equal(s.dropped, 2);
    await s.close();
    await state.stop();
  });
});
