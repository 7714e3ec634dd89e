/**
 * The scoring pool (agent/scoring/scoring-pool.ts) with real worker threads and the real model:
 * training and scoring off the main thread, a worker that dies or hangs mid-task is replaced and
 * its task scored again, a model error comes back as such and the pool stays usable.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { PoolTaskError, ScoringPool, type PoolModel } from "../../agent/scoring/scoring-pool.js";
import { silentLogger } from "../../common/log.js";
import { baselineInputs, baselineVector, seeded } from "./scoring-inputs.js";

describe("scoring pool", () => {
  let dir: string;
  let flag: string;
  let pool: ScoringPool;
  let model: PoolModel;
  const restarts: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-scoring-pool-"));
    flag = join(dir, "fault");
    process.env["SL_TEST_WORKER_FLAG"] = flag;
    pool = await ScoringPool.start({
      log: silentLogger(),
      workers: 1,
      scoreTimeoutMs: 1500,
      script: new URL("./scoring-crash-worker.js", import.meta.url),
      onRestart: (why) => restarts.push(why),
    });
    const t = await pool.train(baselineInputs(240), { key: "generic", scope: { kind: "generic" }, minWindows: 200, seed: 7 });
    model = { key: "generic", version: t.version, artifact: t.artifact };
  });
  after(async () => {
    await pool?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("starts with a backend, trains in a worker and scores a burn above the baseline", async () => {
    assert.ok(["node", "wasm", "cpu"].includes(pool.backend?.name ?? ""), `backend ${JSON.stringify(pool.backend)}`);
    assert.match(model.version, /\S/);
    const rand = seeded(99);
    const [normal, burn] = await pool.score(model, [
      { vector: baselineVector(rand), seconds: 10 },
      { vector: baselineVector(rand, 30), seconds: 10 },
    ]);
    assert.ok(normal !== undefined && burn !== undefined);
    assert.ok(burn.score > normal.score, `burn ${burn.score} vs normal ${normal.score}`);
    assert.ok(burn.score >= 50, `burn scored ${burn.score}`);
    assert.match(burn.reasons[0]?.feature ?? "", /^cpu_seconds/);
  });

  it("a worker restarted mid-task: the task is sent again and scored", async () => {
    const before = pool.restarts;
    const inputs = [{ vector: baselineVector(seeded(5), 30), seconds: 10 }];
    const expected = await pool.score(model, inputs);
    const p = pool.score(model, inputs);
    pool.restartWorker(0, "test: stuck");
    const again = await p;
    assert.equal(pool.restarts, before + 1);
    assert.equal(again[0]?.score, expected[0]?.score);
  });

  it("a worker that dies while it holds a task is replaced and the task scored again", async () => {
    const before = pool.restarts;
    await writeFile(flag, "exit");
    const out = await pool.score(model, [{ vector: baselineVector(seeded(6)), seconds: 10 }]);
    assert.equal(out.length, 1);
    assert.equal(pool.restarts, before + 1);
    assert.match(restarts.at(-1) ?? "", /exited with code 3/);
  });

  it("a worker that hangs past the timeout is replaced and the task scored again", async () => {
    const before = pool.restarts;
    await writeFile(flag, "hang");
    const t0 = Date.now();
    const out = await pool.score(model, [{ vector: baselineVector(seeded(8)), seconds: 10 }]);
    assert.equal(out.length, 1);
    assert.equal(pool.restarts, before + 1);
    assert.ok(Date.now() - t0 >= 1500, "the hang was waited out, not skipped");
    assert.match(restarts.at(-1) ?? "", /held past 1500 ms/);
  });

  it("a model error comes back as one (too few windows) and the pool still scores", async () => {
    await assert.rejects(
      pool.train(baselineInputs(20), { key: "sha256:" + "a".repeat(64), scope: { kind: "image", imageId: "sha256:" + "a".repeat(64) }, minWindows: 200 }),
      (err: unknown) => err instanceof PoolTaskError && err.reason === "too-few-windows",
    );
    assert.equal((await pool.score(model, baselineInputs(3, 4))).length, 3);
  });
});
