/**
 * Disk full under the agent's state (a small tmpfs this test makes): the inventory cache fills
 * level's memtable, a filler file takes all but a little of the space, and writes go on until one
 * is refused (LevelDB's compaction then fails, and its error stays even after space returns). The
 * spool refuses appends without throwing at its caller's feet, counts them, and still reads what it
 * holds; once the filler is gone the state recovers by itself (the sublevels reopened with it), the
 * spool appends again after what it held, and a restart finds every item it accepted.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Spool } from "../../agent/link/spool.js";
import { AgentState } from "../../agent/state/agent-state.js";
import { silentLogger } from "../../common/log.js";
import { WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { smallTmpfs } from "../harness/small-tmpfs.js";

const window = () => ({ case: "windows" as const, value: { windows: [create(WindowSummarySchema, { node: "n", containerId: randomBytes(32).toString("hex"), ticks: 1 })] } });

async function until(what: string, done: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("disk full under the agent's state (a small tmpfs)", () => {
  const disk = smallTmpfs("sl-state-full-", "24m");
  const states: AgentState[] = [];
  const open = async () => {
    const s = new AgentState(join(disk.path, "agent-n"), silentLogger(), { minMs: 100, maxMs: 500 });
    await s.start();
    states.push(s);
    return s;
  };
  after(async () => {
    for (const s of states) await s.stop().catch(() => undefined);
  });

  it("refuses and counts spool appends while full, reads on, and recovers by itself", async () => {
    const state = await open();
    const spool = await Spool.open(state.spool);
    for (let i = 0; i < 5; i++) await spool.append(window());
    // About 3 MB of cached inventories: level's memtable (4 MB) is mostly full.
    for (let i = 0; i < 100; i++) await state.inventory.put(`img-${i}`, randomBytes(30_000));

    await disk.fill(1_500_000);
    let refused: unknown;
    for (let i = 0; i < 200 && refused === undefined; i++) {
      await state.inventory.put(`more-${i}`, randomBytes(30_000)).catch((err: unknown) => (refused = err));
    }
    assert.ok(refused !== undefined, "a write failed on the full disk");
    assert.match(String(refused), /No space left on device/);
    assert.match(state.health.failing?.error ?? "", /No space left on device/);

    const before = state.health.refusedWrites;
    await assert.rejects(spool.append(window()), /the agent's state cannot write/);
    await assert.rejects(spool.append(window()), /the agent's state cannot write/);
    assert.equal(state.health.refusedWrites, before + 2, "each refused append is counted");
    assert.equal(spool.pending, 5, "a refused append is not counted as waiting");
    assert.equal((await spool.readAfter(0n, 100)).length, 5, "what the spool holds is still read");
    assert.ok((await state.inventory.get("img-0")) !== undefined);

    await disk.free();
    await until("the state to write again", () => state.health.failing === undefined);
    assert.equal(await spool.append(window()), 6n, "the spool appends after what it held");
    await state.inventory.put("after", new Uint8Array(1));
    const items = await spool.readAfter(0n, 100);
    assert.deepEqual(
      items.map((i) => i.spoolSeq),
      [1n, 2n, 3n, 4n, 5n, 6n],
    );

    await state.stop();
    states.length = 0;
    const again = await open();
    const reopened = await Spool.open(again.spool);
    assert.equal(reopened.pending, 6, "a restart finds every item the spool accepted");
    assert.ok((await again.inventory.get("after")) !== undefined);
  });
});
