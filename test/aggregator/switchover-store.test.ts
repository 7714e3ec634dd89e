/**
 * The switchover records store on a real level: read back after a reopen, bounded to the newest
 * records (a waiting or running one is never pruned), and an agent's report merged with what only
 * the aggregator knew.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DataMode, SwitchoverKind, SwitchoverOutcome, SwitchoverRecordSchema, SwitchoverTrigger } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { mergeReport, SwitchoverStore } from "../../aggregator/store/switchover-store.js";
import { withTempLevel } from "../harness/temp-level.js";

const rec = (n: number, outcome = SwitchoverOutcome.SUCCEEDED) =>
  create(SwitchoverRecordSchema, { id: `so-${n}`, kind: SwitchoverKind.SWITCHOVER, node: "n1", containerId: "c", outcome, requestedAt: timestampFromMs(1_700_000_000_000 + n * 1000) });

describe("switchover store", () => {
  it("keeps the newest records past its bound, never a waiting or running one, and reads them back after a reopen", async () => {
    await withTempLevel(async (db) => {
      const s = await SwitchoverStore.open(db, 10);
      const heard: string[] = [];
      s.on("upsert", (r) => heard.push(r.id));
      await s.put(rec(0, SwitchoverOutcome.WAITING));
      await s.put(rec(1, SwitchoverOutcome.RUNNING));
      for (let n = 2; n < 40; n++) await s.put(rec(n));
      assert.equal(heard.length, 40, "every write is announced");
      assert.ok(s.size <= 11, `bounded (${s.size})`);
      assert.equal(s.get("so-0")?.outcome, SwitchoverOutcome.WAITING, "a waiting record stays");
      assert.equal(s.get("so-1")?.outcome, SwitchoverOutcome.RUNNING, "a running record stays");
      assert.ok(s.get("so-39") !== undefined && s.get("so-2") === undefined, "the oldest finished went first");
      const again = await SwitchoverStore.open(db, 10);
      assert.deepEqual(again.all().map((r) => r.id).sort(), s.all().map((r) => r.id).sort());
    });
  });

  it("merges an agent's report: its word wins, what it left empty stays", () => {
    const ours = create(SwitchoverRecordSchema, { id: "so-1", trigger: SwitchoverTrigger.PROACTIVE, reason: "risk 90", jobId: "j1", mode: DataMode.SHARED, containerName: "web", requestedAt: timestampFromMs(5), outcome: SwitchoverOutcome.RUNNING });
    const theirs = create(SwitchoverRecordSchema, { id: "so-1", node: "n1", outcome: SwitchoverOutcome.SUCCEEDED, error: "", switchMs: 80 });
    const m = mergeReport(ours, theirs);
    assert.deepEqual([m.outcome, m.trigger, m.reason, m.jobId, m.mode, m.containerName, m.switchMs, m.requestedAt?.nanos], [SwitchoverOutcome.SUCCEEDED, SwitchoverTrigger.PROACTIVE, "risk 90", "j1", DataMode.SHARED, "web", 80, 5_000_000]);
    assert.equal(mergeReport(undefined, theirs), theirs);
  });
});
