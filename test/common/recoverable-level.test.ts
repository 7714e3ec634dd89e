/**
 * The recoverable level without a full disk: a storage error (level's IO error, as a write on a
 * full disk gets it) marks the store failing; every kind of write is then refused, counted and
 * not tried, while reads answer; other errors leave the store healthy; and once the recovery
 * (reopen in place, probe) has run, writes go through the same handle again.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { RecoverableLevel } from "../../common/recoverable-level.js";
import { Code, ShadowError } from "../../common/errors.js";
import { silentLogger } from "../../common/log.js";
import { isStorageError } from "../../common/store-health.js";
import { tempDir } from "../harness/temp-dir.js";

const ioError = () => Object.assign(new Error("IO error: 000005.ldb: No space left on device"), { code: "LEVEL_IO_ERROR" });
/** Bytes as a plain array (level hands back Buffers). */
const bytes = async (v: Promise<Uint8Array | undefined>) => [...((await v) ?? [])];
const refused = (err: unknown) => err instanceof ShadowError && err.code === Code.StorageFailing && /No space left on device/.test(err.message);

describe("recoverable level", () => {
  const dir = tempDir("sl-recoverable-");
  const dbs: RecoverableLevel[] = [];
  after(async () => {
    for (const db of dbs) {
      await db.health.stop();
      await db.close();
    }
  });

  it("tells storage errors from others, through causes too", () => {
    assert.ok(isStorageError(ioError()));
    assert.ok(isStorageError(Object.assign(new Error("Database failed to open"), { code: "LEVEL_DATABASE_NOT_OPEN", cause: ioError() })));
    assert.ok(isStorageError(Object.assign(new Error("write"), { code: "ENOSPC" })));
    assert.ok(!isStorageError(Object.assign(new Error("Key cannot be null"), { code: "LEVEL_INVALID_KEY" })));
    assert.ok(!isStorageError(new Error("boom")));
  });

  it("refuses every kind of write while failing, reads on, and writes again after recovering in place", async () => {
    const db = new RecoverableLevel(join(dir.path, "db"), silentLogger(), { minMs: 50, maxMs: 200 });
    dbs.push(db);
    const sub = db.keepOpen(db.sublevel<string, Uint8Array>("part", { valueEncoding: "view" }));
    await db.open();
    const failing = () => db.health.failing;
    await db.put("kept", new Uint8Array([1]));
    await sub.put("kept", new Uint8Array([2]));

    // Not a storage error: the store stays healthy.
    await assert.rejects(db.health.write(() => Promise.reject(new Error("boom"))), /boom/);
    assert.equal(failing(), undefined);

    const recovered = new Promise((r) => db.health.once("recovered", r));
    await assert.rejects(db.health.write(() => Promise.reject(ioError())), refused);
    assert.match(failing()?.error ?? "", /No space left on device/);
    const before = db.health.refusedWrites;
    await assert.rejects(db.put("a", new Uint8Array(1)), refused);
    await assert.rejects(db.del("kept"), refused);
    await assert.rejects(db.batch([{ type: "put", key: "b", value: new Uint8Array(1) }]), refused);
    await assert.rejects(db.batch().put("c", new Uint8Array(1)).write(), refused);
    await assert.rejects(db.clear(), refused);
    await assert.rejects(sub.put("d", new Uint8Array(1)), refused);
    assert.equal(db.health.refusedWrites, before + 6);
    assert.deepEqual(await bytes(db.get("kept")), [1]);
    assert.deepEqual(await bytes(sub.get("kept")), [2]);
    assert.deepEqual(await db.keys().all(), ["!part!kept", "kept"], "nothing refused was written");

    // The retry timer does not hold the process open (unref), so the test does while it waits.
    const alive = setInterval(() => undefined, 1000);
    await recovered.finally(() => clearInterval(alive));
    assert.equal(failing(), undefined);
    await db.put("a", new Uint8Array([3]));
    await sub.put("d", new Uint8Array([4]));
    await db.batch().put("c", new Uint8Array([5])).write();
    assert.deepEqual(await bytes(sub.get("d")), [4], "the sublevel was reopened with its database");
    assert.deepEqual(await db.keys().all(), ["!part!d", "!part!kept", "a", "c", "kept"], "the probe left nothing behind");
  });
});
