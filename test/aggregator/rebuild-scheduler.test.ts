/**
 * The rebuild scheduler on a real level in a temp dir, with test doubles of the builder pool and
 * the runner (rebuild-test-doubles.ts: the real pool and builds are tested with a real engine
 * elsewhere): the plan from scores and graphs, dedupe, order by risk, each builder's concurrency,
 * retries with backoff that keep the log tail and do not block the queue, a lost builder, a
 * restart, reasons that go away (also from a real score engine's drift and a raised policy), and
 * the operator's cancel, force and rerun.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Level } from "level";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { RebuildState, ShadowPreparationSchema, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { TelemetryItemSchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { ContainerScoresSchema, PolicySchema, type ContainerScores } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { silentLogger } from "../../common/log.js";
import { policyFromInit } from "../../aggregator/index.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { jobIdOf, MAX_REASONS } from "../../aggregator/rebuild/job-key.js";
import { planRebuilds, type PlannedRebuild } from "../../aggregator/rebuild/rebuild-plan.js";
import { CANCELLED_BY_OPERATOR, LOG_TAIL_BYTES, LOG_TAIL_LINES, RebuildScheduler, STRATEGY_BY_OPERATOR, type RebuildSchedulerOptions } from "../../aggregator/rebuild/scheduler.js";
import { ScoreEngine } from "../../aggregator/risk/score-engine.js";
import { GraphStore } from "../../aggregator/store/graph-store.js";
import { TelemetryStore } from "../../aggregator/store/telemetry-store.js";
import { waitFor } from "../harness/engine.js";
import { TestBuilderPool, TestJobRunner } from "../harness/rebuild-test-doubles.js";

const img = (c: string) => `sha256:${c.repeat(64)}`;
const layer = (c: string) => `sha256:${c.repeat(64)}`;
const cid = (n: number) => n.toString(16).padStart(64, "0");

function planned(imageId: string, reasons: string[], risk: number, image = `example/${imageId.slice(7, 11)}:1`): PlannedRebuild {
  return { id: jobIdOf(imageId, reasons), imageId, image, reasons, risk, sourceLayer: layer("a"), sourceLayerName: "base", containers: [cid(1)], nodes: ["n1"] };
}

function graph(n: number, imageId: string, image: string, layers: string[], node = "n1"): LayerGraph {
  return create(LayerGraphSchema, {
    containerId: cid(n),
    containerName: `c${n}`,
    node,
    image,
    imageId,
    state: "running",
    layers: [...layers.map((l, i) => ({ layerId: l, name: `layer ${i}`, kind: LayerKind.IMAGE, index: i })), { layerId: `rw:${cid(n)}`, name: "rw", kind: LayerKind.WRITABLE }],
  });
}

function scores(n: number, threshold: number, layers: Array<{ id: string; risk: number; reasons: Array<{ kind: string; id: string; value?: number }> }>): ContainerScores {
  return create(ContainerScoresSchema, {
    containerId: cid(n),
    containerName: `c${n}`,
    node: "n1",
    policy: create(PolicySchema, { name: "p", rebuildThreshold: threshold, switchThreshold: 95 }),
    layers: layers.map((l) => ({ layerId: l.id, layerName: `name of ${l.id.slice(0, 12)}`, risk: l.risk, reasons: l.reasons.map((r) => ({ kind: r.kind, id: r.id, value: r.value ?? 0.5 })) })),
    risk: Math.max(0, ...layers.map((l) => l.risk)),
  });
}

const state = (s: RebuildScheduler, id: string) => s.get(id)?.state;
const isCode = (code: Code) => (err: unknown) => err instanceof ShadowError && err.code === code;

/** A scheduler over a level in its own temp dir, reopened on the same dir by `restart`. */
class Harness {
  dir = "";
  db: Level<string, Uint8Array> | undefined;
  s: RebuildScheduler | undefined;

  constructor(
    readonly pool: TestBuilderPool,
    readonly runner: TestJobRunner,
    readonly extra: Partial<RebuildSchedulerOptions> = {},
  ) {}

  async open(): Promise<RebuildScheduler> {
    if (this.dir === "") this.dir = await mkdtemp(join(tmpdir(), "sl-rebuild-"));
    this.db = new Level<string, Uint8Array>(this.dir, { keyEncoding: "utf8", valueEncoding: "view" });
    await this.db.open();
    this.s = await RebuildScheduler.open({ db: this.db, pool: this.pool, runner: this.runner, log: silentLogger(), retryMinMs: 200, retryMaxMs: 400, startupGraceMs: 0, planDelayMs: 10, ...this.extra });
    return this.s;
  }

  async close(): Promise<void> {
    await this.s?.close();
    await this.db?.close();
    this.s = undefined;
    this.db = undefined;
  }

  async dispose(): Promise<void> {
    await this.close();
    if (this.dir !== "") await rm(this.dir, { recursive: true, force: true });
  }
}

describe("rebuild plan", () => {
  it("plans every image that contains a layer past its container's threshold, one per image, reasons as advisory ids, drift, performance-anomaly", () => {
    const base = layer("a");
    const graphs = [graph(1, img("1"), "app:1", [base, layer("b")]), graph(2, img("1"), "app:1", [base, layer("b")], "n2"), graph(3, img("2"), "other:1", [base, layer("c")]), graph(4, img("3"), "quiet:1", [layer("d")])];
    const list = [
      // Container 1's policy passes the shared base layer: images 1 and 2 both contain it.
      scores(1, 60, [{ id: base, risk: 70, reasons: [{ kind: "vuln", id: "CVE-2024-0727" }, { kind: "vuln", id: "DEBIAN-CVE-2023-1" }] }, { id: layer("b"), risk: 10, reasons: [{ kind: "vuln", id: "CVE-LOW" }] }]),
      // Container 2 (same image) has a stricter policy: it adds nothing, it does not take image 1 away.
      scores(2, 90, [{ id: base, risk: 70, reasons: [{ kind: "vuln", id: "CVE-2024-0727" }, { kind: "vuln", id: "DEBIAN-CVE-2023-1" }] }]),
      scores(3, 95, [{ id: `rw:${cid(3)}`, risk: 80, reasons: [{ kind: "drift", id: "drift" }] }]),
      scores(4, 60, [{ id: layer("d"), risk: 59.9, reasons: [{ kind: "vuln", id: "CVE-BELOW" }] }]),
    ];
    const plans = planRebuilds(list, graphs);
    assert.deepEqual(
      plans.map((p) => [p.image, p.reasons, p.risk, p.containers, p.nodes]),
      [
        ["app:1", ["CVE-2024-0727", "DEBIAN-CVE-2023-1"], 70, [cid(1), cid(2)], ["n1", "n2"]],
        ["other:1", ["CVE-2024-0727", "DEBIAN-CVE-2023-1"], 70, [cid(3)], ["n1"]],
      ],
    );
    assert.equal(plans[0]?.sourceLayer, base);
    assert.equal(plans[0]?.id, jobIdOf(img("1"), ["CVE-2024-0727", "DEBIAN-CVE-2023-1"]));

    // Drift (container 3 under a threshold it passes) and an anomaly join image 2's reasons.
    const more = [...list.slice(0, 2), scores(3, 60, [{ id: base, risk: 70, reasons: [{ kind: "vuln", id: "CVE-2024-0727" }] }, { id: `rw:${cid(3)}`, risk: 80, reasons: [{ kind: "drift", id: "drift" }, { kind: "anomaly", id: "cpu" }] }])];
    const other = planRebuilds(more, graphs).find((p) => p.imageId === img("2"));
    assert.deepEqual(other?.reasons, ["CVE-2024-0727", "DEBIAN-CVE-2023-1", "drift", "performance-anomaly"]);
    assert.equal(other?.risk, 80);
    assert.equal(other?.sourceLayer, `rw:${cid(3)}`);
  });

  it("keeps at most 64 reasons, drift and the weightiest advisories first, the same ones every time", () => {
    const many = Array.from({ length: 100 }, (_, i) => ({ kind: "vuln", id: `CVE-2024-${String(i).padStart(4, "0")}`, value: i / 100 }));
    const g = [graph(1, img("1"), "app:1", [layer("a")])];
    const p1 = planRebuilds([scores(1, 50, [{ id: layer("a"), risk: 90, reasons: many }, { id: `rw:${cid(1)}`, risk: 80, reasons: [{ kind: "drift", id: "drift" }] }])], g)[0];
    const p2 = planRebuilds([scores(1, 50, [{ id: layer("a"), risk: 90, reasons: [...many].reverse() }, { id: `rw:${cid(1)}`, risk: 80, reasons: [{ kind: "drift", id: "drift" }] }])], g)[0];
    assert.equal(p1?.reasons.length, MAX_REASONS);
    assert.ok(p1?.reasons.includes("drift"));
    assert.ok(p1?.reasons.includes("CVE-2024-0099") && !p1.reasons.includes("CVE-2024-0000"), "the weightiest advisories are kept");
    assert.equal(p1?.id, p2?.id);
  });
});

describe("rebuild scheduler", () => {
  let h: Harness;
  afterEach(async () => {
    await h.dispose();
  });
  /** A scheduler on one builder of concurrency 1. */
  const openOneBuilder = (extra: Partial<RebuildSchedulerOptions> = {}) => {
    h = new Harness(new TestBuilderPool([{ name: "b1", concurrency: 1 }]), new TestJobRunner(), extra);
    return h.open();
  };

  it("dedupes: the same image and reasons planned twice (and twice in one plan) are one job", async () => {
    const s = await openOneBuilder();
    const p = planned(img("1"), ["CVE-1"], 70);
    await s.applyPlan([p, { ...p, risk: 75, containers: [cid(2)] }]);
    await s.applyPlan([{ ...p, risk: 75, containers: [cid(1), cid(2)] }]);
    assert.equal(s.all().length, 1);
    assert.equal(s.all()[0]?.risk, 75);
    assert.deepEqual(s.all()[0]?.containers, [cid(1), cid(2)]);
    // Other reasons for the same image: another job.
    await s.applyPlan([p, planned(img("1"), ["CVE-1", "CVE-2"], 70)]);
    assert.equal(s.all().length, 2);
  });

  it("runs the riskiest first, a riskier job planned meanwhile next, and never more than a builder's concurrency", async () => {
    const pool = new TestBuilderPool([{ name: "b1", concurrency: 1 }]);
    h = new Harness(pool, new TestJobRunner());
    const s = await h.open();
    const low = planned(img("1"), ["CVE-1"], 10);
    const high = planned(img("2"), ["CVE-2"], 90);
    const mid = planned(img("3"), ["CVE-3"], 50);
    await s.applyPlan([low, high, mid]);
    const first = await h.runner.next();
    assert.equal(first.job.id, high.id);
    assert.equal(state(s, high.id), RebuildState.RUNNING);
    await waitFor("the build's steps stored", () => (s.get(high.id)?.steps.length === 2 ? true : undefined));
    assert.equal(s.get(high.id)?.progress, 25);
    const urgent = planned(img("4"), ["CVE-4"], 95);
    await s.applyPlan([low, high, mid, urgent]);
    first.succeed();
    const order = [first.job.id];
    for (let i = 0; i < 3; i++) {
      const b = await h.runner.next();
      order.push(b.job.id);
      b.succeed();
    }
    assert.deepEqual(order, [high.id, urgent.id, mid.id, low.id]);
    await waitFor("all ready", () => (s.all().every((j) => j.state === RebuildState.READY) ? true : undefined));
    assert.equal(pool.maxRunningTotal, 1, "concurrency 1: never two at once");
    const done = s.get(high.id) as RebuildJob;
    assert.equal(done.progress, 100);
    assert.equal(done.builder, "b1");
    assert.equal(done.steps.find((x) => x.name === "build")?.state, "ok");
    assert.equal(done.shadow?.reference, `sha256:shadow-of-${high.id}`);
  });

  it("runs as many at once as the builders' concurrency allows", async () => {
    const pool = new TestBuilderPool([
      { name: "b1", concurrency: 2 },
      { name: "b2", concurrency: 1 },
    ]);
    h = new Harness(pool, new TestJobRunner());
    const s = await h.open();
    await s.applyPlan([1, 2, 3, 4, 5].map((n) => planned(img(String(n)), [`CVE-${n}`], n * 10)));
    const running = [await h.runner.next(), await h.runner.next(), await h.runner.next()];
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(h.runner.builds.length, 3, "no fourth build while three slots are taken");
    assert.deepEqual(running.map((b) => b.job.risk), [50, 40, 30]);
    assert.equal(pool.maxRunning.get("b1"), 2);
    assert.equal(pool.maxRunning.get("b2"), 1);
    for (const b of running) b.succeed();
    for (let i = 0; i < 2; i++) (await h.runner.next()).succeed();
    await waitFor("all ready", () => (s.all().every((j) => j.state === RebuildState.READY) ? true : undefined));
  });

  it("retries a failed build with backoff, keeps its log tail, runs the next job meanwhile, and fails after the last attempt", async () => {
    h = new Harness(new TestBuilderPool([{ name: "b1", concurrency: 1 }]), new TestJobRunner(), { maxAttempts: 2, retryMinMs: 400, retryMaxMs: 800 });
    const s = await h.open();
    const bad = planned(img("1"), ["CVE-1"], 90);
    const good = planned(img("2"), ["CVE-2"], 20);
    await s.applyPlan([bad, good]);
    const b1 = await h.runner.next();
    assert.equal(b1.job.id, bad.id);
    for (let i = 0; i < 100; i++) b1.log(`step ${i}: ${"x".repeat(200)}`);
    b1.fail(new ShadowError(Code.BuildFailed, "RUN apt-get install failed: exit code 100"));
    const b2 = await h.runner.next();
    assert.equal(b2.job.id, good.id, "the queue goes on while the failed job waits");
    const failed = s.get(bad.id) as RebuildJob;
    assert.equal(failed.state, RebuildState.QUEUED);
    assert.equal(failed.attempts, 1);
    assert.match(failed.error, /apt-get install failed/);
    assert.ok(failed.nextAttemptAt !== undefined && timestampDate(failed.nextAttemptAt).getTime() > Date.now(), "next attempt after a backoff");
    assert.ok(failed.logTail.length <= LOG_TAIL_LINES && failed.logTail.length > 10);
    assert.ok(Buffer.byteLength(failed.logTail.join("")) <= LOG_TAIL_BYTES);
    assert.match(failed.logTail.at(-1) ?? "", /^step 99:/, "the last lines are the ones kept");
    assert.equal(failed.steps.find((x) => x.name === "build")?.state, "failed");
    b2.succeed();
    const started = Date.now();
    const retry = await h.runner.next();
    assert.equal(retry.job.id, bad.id);
    assert.equal(retry.job.attempts, 2);
    assert.ok(Date.now() - started >= 100, "not retried at once");
    retry.fail(new Error("still broken"));
    await waitFor("failed for good", () => (state(s, bad.id) === RebuildState.FAILED ? true : undefined));
    assert.equal(s.get(bad.id)?.error, "still broken");
    assert.equal(s.get(bad.id)?.nextAttemptAt, undefined);
  });

  it("moves a job off a builder that went away, to another builder, without counting an attempt", async () => {
    const pool = new TestBuilderPool([
      { name: "b1", concurrency: 1 },
      { name: "b2", concurrency: 1 },
    ]);
    h = new Harness(pool, new TestJobRunner());
    const s = await h.open();
    const errors: string[] = [];
    s.on("upsert", (j) => errors.push(j.error));
    const p = planned(img("1"), ["CVE-1"], 90);
    await s.applyPlan([p]);
    const first = await h.runner.next();
    assert.equal(first.builder, "b1");
    pool.lose("b1");
    assert.equal(first.signal.aborted, true, "the build was stopped");
    const second = await h.runner.next();
    assert.equal(second.job.id, p.id);
    assert.equal(second.builder, "b2");
    assert.equal(second.job.attempts, 1, "the lost attempt is not counted");
    assert.ok(errors.some((e) => /builder b1 went away during the build/.test(e)), "the job said why it was queued again");
    second.succeed();
    await waitFor("ready", () => (state(s, p.id) === RebuildState.READY ? true : undefined));
    assert.equal(s.get(p.id)?.builder, "b2");
  });

  it("resumes after a restart: queued jobs stay queued, a running one is queued again, and both run", async () => {
    h = new Harness(new TestBuilderPool([{ name: "b1", concurrency: 1 }]), new TestJobRunner());
    let s = await h.open();
    const a = planned(img("1"), ["CVE-1"], 90);
    const b = planned(img("2"), ["CVE-2"], 50);
    await s.applyPlan([a, b]);
    const running = await h.runner.next();
    assert.equal(running.job.id, a.id);
    await h.close();
    assert.equal(running.signal.aborted, true, "the build was stopped with the aggregator");

    s = await h.open();
    const again = await h.runner.next();
    assert.equal(again.job.id, a.id);
    assert.match(s.get(a.id)?.error ?? "", /^$/);
    again.succeed();
    const next = await h.runner.next();
    assert.equal(next.job.id, b.id);
    next.succeed();
    await waitFor("both ready", () => (s.all().every((j) => j.state === RebuildState.READY) ? true : undefined));
  });

  it("a job found RUNNING in the store at open is queued again with why", async () => {
    h = new Harness(new TestBuilderPool([{ name: "b1", concurrency: 1 }]), new TestJobRunner());
    let s = await h.open();
    const a = planned(img("1"), ["CVE-1"], 90);
    await s.applyPlan([a]);
    await h.runner.next();
    await h.close();
    // The pool has no free builder at the next open: the job stays QUEUED where it can be seen.
    h.pool.lose("b1");
    s = await h.open();
    assert.equal(state(s, a.id), RebuildState.QUEUED);
    assert.match(s.get(a.id)?.error ?? "", /aggregator stopped during this build/);
  });

  it("cancels what the plan no longer asks for (stopping a running build), keeps forced jobs, and brings a job back when it is planned again", async () => {
    const s = await openOneBuilder();
    const a = planned(img("1"), ["CVE-1"], 90);
    const b = planned(img("2"), ["CVE-2"], 50);
    const c = planned(img("3"), ["CVE-3"], 40);
    await s.applyPlan([a, b, c]);
    const run = await h.runner.next();
    assert.equal(run.job.id, a.id);
    await s.force({ job: c.id });
    // The feed changed: image 1 has other reasons now, image 2 none.
    const a2 = planned(img("1"), ["CVE-9"], 80);
    await s.applyPlan([a2]);
    assert.equal(run.signal.aborted, true, "the running build was stopped");
    assert.equal(state(s, a.id), RebuildState.CANCELLED);
    assert.match(s.get(a.id)?.error ?? "", /reasons changed: the image is now planned for CVE-9/);
    assert.equal(state(s, b.id), RebuildState.CANCELLED);
    assert.match(s.get(b.id)?.error ?? "", /reasons went away/);
    assert.notEqual(state(s, c.id), RebuildState.CANCELLED, "a forced job stays");
    assert.ok(s.get(a2.id) !== undefined, "the new reasons are a new job");
    // Forced first, then the new plan.
    const n1 = await h.runner.next();
    assert.equal(n1.job.id, c.id);
    n1.succeed();
    const n2 = await h.runner.next();
    assert.equal(n2.job.id, a2.id);
    // Image 2 is planned again for the same reasons: the same job, queued again.
    await s.applyPlan([a2, b]);
    assert.equal(state(s, b.id), RebuildState.QUEUED);
    assert.equal(s.get(b.id)?.error, "");
    // A running job whose reasons are all still there keeps running when more are added.
    await s.applyPlan([planned(img("1"), ["CVE-10", "CVE-9"], 30), b]);
    assert.equal(n2.signal.aborted, false);
    n2.succeed();
    const n3 = await h.runner.next();
    assert.equal(n3.job.id, b.id);
    n3.succeed();
  });

  it("cancels from a real score engine: drift past the threshold plans a job, a raised policy takes its reason away", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sl-rebuild-scores-"));
    const store = await GraphStore.open(join(dir, "store"));
    const telemetry = await TelemetryStore.open(store.db);
    const feeds = await FeedManager.open(store.db, [], silentLogger());
    const engine = await ScoreEngine.open({ db: store.db, graphs: store, telemetry, feeds, log: silentLogger() });
    const pool = new TestBuilderPool([{ name: "b1", concurrency: 1 }]);
    const runner = new TestJobRunner();
    const s = await RebuildScheduler.open({ db: store.db, pool, runner, scores: engine, graphs: store, log: silentLogger(), startupGraceMs: 0, planDelayMs: 10 });
    h = new Harness(pool, runner);
    try {
      const g = graph(7, img("7"), "drifty:1", [layer("a")]);
      await store.putGraph(g);
      await telemetry.put(
        "n1",
        create(TelemetryItemSchema, {
          spoolId: "sp",
          spoolSeq: 1n,
          body: { case: "detection", value: { id: "d1", node: "n1", containerId: g.containerId, layerId: `rw:${g.containerId}`, rule: "drift", reason: "added", path: "/tmp/x", at: timestampFromDate(new Date()) } },
        }),
      );
      const id = jobIdOf(img("7"), ["drift"]);
      const build = await runner.next();
      assert.equal(build.job.id, id);
      assert.equal(build.job.image, "drifty:1");
      assert.deepEqual(build.job.containers, [g.containerId]);
      assert.equal(build.job.risk, 80);
      await engine.setPolicy(policyFromInit({ name: "default", rebuild_threshold: 90, switch_threshold: 95 }));
      await waitFor("cancelled", () => (state(s, id) === RebuildState.CANCELLED ? true : undefined));
      assert.equal(build.signal.aborted, true);
    } finally {
      await s.close();
      engine.stop();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("cancel, force and rerun: by id or prefix, each in its own states; READY supersedes the image's older shadow", async () => {
    h = new Harness(new TestBuilderPool([{ name: "b1", concurrency: 1 }]), new TestJobRunner(), { retryMinMs: 60_000, retryMaxMs: 60_000 });
    const s = await h.open();
    const a = planned(img("1"), ["CVE-1"], 90, "app:1");
    const b = planned(img("2"), ["CVE-2"], 50, "other:1");
    const c = planned(img("3"), ["CVE-3"], 10, "third:1");
    await s.applyPlan([a, b, c]);
    const run = await h.runner.next();
    assert.equal(run.job.id, a.id);

    await assert.rejects(s.cancel("ffffffffffff"), isCode(Code.NotFound));
    await assert.rejects(s.cancel(""), isCode(Code.InvalidArgument));
    // Cancel a queued one by a prefix, and the running one: its build is stopped.
    assert.equal((await s.cancel(b.id.slice(0, 8))).state, RebuildState.CANCELLED);
    assert.equal((await s.cancel(a.id)).error, CANCELLED_BY_OPERATOR);
    assert.equal(run.signal.aborted, true);
    await assert.rejects(s.cancel(a.id), isCode(Code.FailedPrecondition));
    // An operator's cancel is not undone by the plan.
    await s.applyPlan([a, b, c]);
    assert.equal(state(s, a.id), RebuildState.CANCELLED);

    const cRun = await h.runner.next();
    assert.equal(cRun.job.id, c.id);
    cRun.fail(new Error("boom"));
    await waitFor("c backing off", () => (s.get(c.id)?.nextAttemptAt !== undefined ? true : undefined));
    // Force: ahead of the backoff (a minute here).
    await s.force({ job: c.id });
    const cAgain = await h.runner.next();
    assert.equal(cAgain.job.id, c.id);
    cAgain.succeed();
    await waitFor("c ready", () => (state(s, c.id) === RebuildState.READY ? true : undefined));

    // Rerun a cancelled job; a queued one cannot be rerun.
    assert.equal((await s.rerun(b.id)).state, RebuildState.QUEUED);
    await assert.rejects(s.rerun(b.id), isCode(Code.FailedPrecondition));
    const bRun = await h.runner.next();
    assert.equal(bRun.job.id, b.id);
    assert.equal(bRun.job.attempts, 1);
    bRun.succeed();
    await waitFor("b ready", () => (state(s, b.id) === RebuildState.READY ? true : undefined));

    // Force a plan for an image by name with a strategy: its planned reasons, ahead of the queue.
    await assert.rejects(s.force({ image: "nope:1" }), isCode(Code.NotFound));
    await assert.rejects(s.force({ image: "other:1", strategy: "magic" }), isCode(Code.InvalidArgument));
    const forced = await s.force({ image: "other:1", strategy: "recipe" });
    assert.equal(forced.id, b.id, "the image's planned job, run again");
    const fRun = await h.runner.next();
    assert.equal(fRun.job.strategy, "recipe");
    assert.equal(fRun.job.strategyReason, STRATEGY_BY_OPERATOR);
    fRun.succeed();
    await waitFor("b ready again", () => (state(s, b.id) === RebuildState.READY ? true : undefined));
    assert.equal(s.get(b.id)?.strategy, "recipe");
    assert.equal(s.get(b.id)?.strategyReason, `${STRATEGY_BY_OPERATOR}: test double`, "the runner's words follow the operator's mark");
    await s.rerun(b.id);
    const rerun = await h.runner.next();
    assert.equal(rerun.job.strategy, "recipe", "a rerun keeps the operator's strategy");
    rerun.succeed();
    await waitFor("b ready a third time", () => (state(s, b.id) === RebuildState.READY ? true : undefined));

    // A second READY shadow of image 3 (other reasons) supersedes the first.
    const c2 = planned(img("3"), ["CVE-3", "CVE-33"], 10, "third:1");
    await s.applyPlan([c2]);
    (await h.runner.next()).succeed();
    await waitFor("c2 ready", () => (state(s, c2.id) === RebuildState.READY ? true : undefined));
    assert.equal(state(s, c.id), RebuildState.SUPERSEDED);
    assert.equal(state(s, b.id), RebuildState.READY, "another image's shadow is kept");

    // Rerun a READY one; a prefix shared by two jobs is ambiguous.
    assert.equal((await s.rerun(c.id)).state, RebuildState.QUEUED);
    // 17 jobs: two of them share a first hex digit.
    await s.applyPlan([..."456789abcdefghijk"].map((ch) => planned(img(ch), ["CVE-X"], 1)));
    const prefixes = new Map<string, number>();
    for (const j of s.all()) prefixes.set(j.id[0] ?? "", (prefixes.get(j.id[0] ?? "") ?? 0) + 1);
    const shared = [...prefixes].find(([, n]) => n > 1)?.[0] ?? "";
    await assert.rejects(s.cancel(shared), isCode(Code.InvalidArgument));
  });

  it("keeps each node's preparation answer with the job (one per container) and a collected shadow's note, across a restart", async () => {
    h = new Harness(new TestBuilderPool([{ name: "b1", concurrency: 1 }]), new TestJobRunner());
    h.runner.auto = (b) => b.succeed();
    let s = await h.open();
    const p = planned(img("1"), ["CVE-1"], 50);
    await s.applyPlan([p]);
    await waitFor("ready", () => (state(s, p.id) === RebuildState.READY ? true : undefined));
    const prep = (st: string) => create(ShadowPreparationSchema, { node: "n1", containerId: cid(1), state: st, at: timestampFromDate(new Date()) });
    await s.notePreparation(p.id, prep("pending"));
    await s.notePreparation(p.id, prep("prepared"));
    await s.notePreparation("no-such-job", prep("prepared"));
    await s.noteCollected(p.id, "removed sha256:shadow from b1's engine");
    await h.close();
    s = await h.open();
    const j = s.get(p.id) as RebuildJob;
    assert.deepEqual(j.preparations.map((x) => [x.node, x.containerId, x.state]), [["n1", cid(1), "prepared"]]);
    assert.equal(j.shadow?.reference, "", "the collected shadow's reference is cleared");
    assert.equal(j.logTail.at(-1), "removed sha256:shadow from b1's engine");
  });

  it("keeps at most maxJobs, pruning the oldest finished first", async () => {
    h = new Harness(new TestBuilderPool([{ name: "b1", concurrency: 1 }]), new TestJobRunner(), { maxJobs: 3 });
    h.runner.auto = (b) => b.succeed();
    const s = await h.open();
    const deleted: string[] = [];
    s.on("delete", (id) => deleted.push(id));
    const first = planned(img("1"), ["CVE-1"], 10);
    await s.applyPlan([first]);
    // Ready, and its build's slot given back (a job still winding down is not pruned).
    await waitFor("first ready", () => (state(s, first.id) === RebuildState.READY && h.pool.status()[0]?.running === 0 ? true : undefined));
    const more = [2, 3, 4].map((n) => planned(img(String(n)), [`CVE-${n}`], n * 10));
    await s.applyPlan(more);
    assert.equal(s.all().length, 3);
    assert.deepEqual(deleted, [first.id], "the finished job went");
    await waitFor("all ready", () => (s.all().every((j) => j.state === RebuildState.READY) ? true : undefined));
  });
});
