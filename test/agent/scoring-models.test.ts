/**
 * The anomaly scorer's models (agent/scoring/anomaly-scorer.ts, model-store.ts) with real workers
 * and a real model directory: no model means no score; a corrupt file is rejected and counted while
 * the generic model scores; a valid file placed in the directory is hot-loaded without a restart;
 * files of another feature version or trained on too few windows are rejected and the model in
 * use stays; ModelUpdate through the command journal answers loaded or rejected; the lifecycle on
 * its own: the generic model once the node has enough windows (a container's start windows not
 * counted), the image's own after its warm-up; and a slow batch goes on without scores.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { CommandSchema, CommandStatus, ModelUpdateSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { unimplementedHandler } from "../../agent/actions/command-handler.js";
import { CommandJournal } from "../../agent/actions/command-journal.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { AnomalyScorer } from "../../agent/scoring/anomaly-scorer.js";
import { silentLogger } from "../../common/log.js";
import type { ModelArtifact } from "../../models/types.js";
import { waitFor } from "../harness/engine.js";
import { baselineInputs, baselineVector, seeded, windowOf } from "./scoring-inputs.js";

const IMAGE = `sha256:${"ab".repeat(32)}`;
const IMAGE_FILE = `image-${"ab".repeat(32)}.json`;

/** Writes `text` as `name` in `dir` the way an operator's tool should: a temporary file renamed over. */
async function place(dir: string, name: string, text: string): Promise<void> {
  await writeFile(join(dir, `.${name}.part`), text);
  await rename(join(dir, `.${name}.part`), join(dir, name));
}

describe("anomaly models on the agent", () => {
  let dir: string;
  let metrics: AgentMetrics;
  let scorer: AnomalyScorer;
  const artifacts: Record<"generic" | "v1" | "v2", { version: string; artifact: string }> = {} as never;
  const rand = seeded(3);
  const batch = (cpuTimes = 1) => [windowOf("c1", [{ id: "layer-a", vector: baselineVector(rand, cpuTimes) }])];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-scoring-models-"));
    metrics = new AgentMetrics();
    scorer = new AnomalyScorer({ log: silentLogger(), metrics, imageOf: () => IMAGE, modelDir: dir, warmupMs: 3_600_000, pollMs: 200 });
    await scorer.start();
    await scorer.ready();
    const pool = scorer.workers;
    assert.ok(pool !== undefined, scorer.status().backendReason);
    artifacts.generic = await pool.train(baselineInputs(220, 1), { key: "generic", scope: { kind: "generic" }, minWindows: 200, seed: 1 });
    artifacts.v1 = await pool.train(baselineInputs(220, 2), { key: IMAGE, scope: { kind: "image", imageId: IMAGE }, minWindows: 200, seed: 2 });
    artifacts.v2 = await pool.train(baselineInputs(230, 3), { key: IMAGE, scope: { kind: "image", imageId: IMAGE }, minWindows: 200, seed: 3 });
  });
  after(async () => {
    await scorer?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("without any model a window carries no anomaly; the backend is reported and exported", async () => {
    const b = batch();
    await scorer.score(b);
    assert.equal(b[0]?.layers[0]?.anomaly, undefined);
    const s = scorer.status();
    assert.equal(s.windowsScored, 0n);
    assert.equal(s.enabled, true);
    assert.ok(["node", "wasm", "cpu"].includes(s.backend), s.backendReason);
    const text = await metrics.registry.metrics();
    assert.match(text, new RegExp(`shadowlayer_agent_anomaly_backend\\{backend="${s.backend}"\\} 1`));
    assert.match(text, /shadowlayer_agent_event_loop_delay_p99_seconds \d/);
  });

  it("a corrupt image model is rejected and counted; the generic model scores, flagged generic", async () => {
    await place(dir, "generic.json", artifacts.generic.artifact);
    await place(dir, IMAGE_FILE, "{ this is not a model");
    await waitFor("the generic model loaded", () => scorer.store.get("generic"), 5000);
    await waitFor("the corrupt file rejected", () => scorer.status().modelsRejected >= 1n, 5000);
    const b = batch();
    await scorer.score(b);
    const a = b[0]?.layers[0]?.anomaly;
    assert.ok(a !== undefined, "scored");
    assert.equal(a.generic, true);
    assert.equal(a.modelVersion, artifacts.generic.version);
    assert.ok(a.score >= 0 && a.score <= 100);
    const s = scorer.status();
    assert.equal(s.modelsRejected, 1n);
    assert.match(s.lastRejection, new RegExp(`${IMAGE}: corrupt`));
    assert.deepEqual(
      s.models.map((m) => [m.scope, m.version, m.origin]),
      [["generic", artifacts.generic.version, "deployed"]],
    );
    assert.match(await metrics.registry.metrics(), /shadowlayer_agent_anomaly_models_rejected_total\{reason="corrupt"\} 1/);
  });

  it("a valid model placed in the directory is hot-loaded: the scorer's model version changes", async () => {
    await place(dir, IMAGE_FILE, artifacts.v1.artifact);
    await waitFor("v1 in use", () => scorer.modelFor(IMAGE)?.manifest.version === artifacts.v1.version, 5000);
    const b = batch(30);
    await scorer.score(b);
    const a = b[0]?.layers[0]?.anomaly;
    assert.equal(a?.generic, false);
    assert.equal(a?.modelVersion, artifacts.v1.version);
    assert.ok((a?.score ?? 0) >= 50, `a burn scores ${a?.score}`);
    assert.match(a?.reasons[0]?.feature ?? "", /^cpu_seconds/);
  });

  it("another feature version or too few training windows: rejected, the model in use stays", async () => {
    const wrong = JSON.parse(artifacts.v2.artifact) as ModelArtifact;
    wrong.manifest.featureVersion = "layer-window-v1";
    await place(dir, IMAGE_FILE, JSON.stringify(wrong));
    await waitFor("the v1-feature model rejected", () => scorer.status().modelsRejected >= 2n, 5000);
    assert.match(scorer.status().lastRejection, /feature-version/);
    const few = JSON.parse(artifacts.v2.artifact) as ModelArtifact;
    few.manifest.trainingWindows = 12;
    await place(dir, IMAGE_FILE, JSON.stringify(few));
    await waitFor("the too-few-windows model rejected", () => scorer.status().modelsRejected >= 3n, 5000);
    assert.match(scorer.status().lastRejection, /too-few-windows/);
    assert.equal(scorer.modelFor(IMAGE)?.manifest.version, artifacts.v1.version);
  });

  it("ModelUpdate through the journal: loaded (stored and hot-loaded) or rejected", async () => {
    const journal = new CommandJournal(undefined, unimplementedHandler, { log: silentLogger(), modelUpdate: (a) => scorer.modelUpdate(a) });
    const update = (id: string, artifact: string, version = "") =>
      journal.run(create(CommandSchema, { id, action: { case: "modelUpdate", value: create(ModelUpdateSchema, { imageId: IMAGE, artifact: new TextEncoder().encode(artifact), version }) } }));
    const ok = await update("m1", artifacts.v2.artifact, artifacts.v2.version);
    assert.equal(ok.status, CommandStatus.OK, ok.message);
    assert.match(ok.message, new RegExp(`loaded model ${artifacts.v2.version}`));
    assert.equal(scorer.modelFor(IMAGE)?.manifest.version, artifacts.v2.version);
    assert.equal(await readFile(join(dir, IMAGE_FILE), "utf8"), artifacts.v2.artifact);
    const kept = journal.entry("m1")?.command.action;
    assert.ok(kept?.case === "modelUpdate");
    assert.equal(kept.value.artifact.length, 0, "the artifact is not journaled");
    assert.equal(kept.value.version, artifacts.v2.version);

    const bad = await update("m2", "\u0000garbage");
    assert.equal(bad.status, CommandStatus.REJECTED);
    assert.match(bad.message, new RegExp(`in use: ${IMAGE} ${artifacts.v2.version}`));
    const mismatch = await update("m3", artifacts.v1.artifact, "some-other-version");
    assert.equal(mismatch.status, CommandStatus.REJECTED);
    assert.match(mismatch.message, /version/);
    const generic = await journal.run(
      create(CommandSchema, { id: "m4", action: { case: "modelUpdate", value: create(ModelUpdateSchema, { imageId: "", artifact: new TextEncoder().encode(artifacts.v1.artifact) }) } }),
    );
    assert.equal(generic.status, CommandStatus.REJECTED, "an image's model is not taken as the generic one");
    assert.equal(scorer.modelFor(IMAGE)?.manifest.version, artifacts.v2.version);
    // The directory's own copy was not replaced by the rejected ones.
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(scorer.modelFor(IMAGE)?.manifest.version, artifacts.v2.version);
  });

  it("bad input: NaN, Infinity, negative deltas, a cut vector, no window length — nothing throws, the rest is scored", async () => {
    const rand2 = seeded(21);
    const odd = baselineVector(rand2);
    odd[0] = Number.NaN;
    odd[1] = Number.POSITIVE_INFINITY;
    odd[3] = -1e12;
    const cut = windowOf("c-bad", [{ id: "cut", vector: baselineVector(rand2) }]);
    const l0 = cut.layers[0];
    assert.ok(l0 !== undefined);
    l0.featuresF64le = l0.featuresF64le.subarray(0, 13);
    const timeless = windowOf("c-bad", [{ id: "timeless", vector: baselineVector(rand2) }]);
    delete timeless.start;
    const b = [windowOf("c-bad", [{ id: "odd", vector: odd }, { id: "fine", vector: baselineVector(rand2) }]), cut, timeless];
    await scorer.score(b);
    const [odd0, fine] = b[0]?.layers ?? [];
    assert.ok(odd0?.anomaly !== undefined && Number.isFinite(odd0.anomaly.score), "a vector with NaN/Infinity/negatives is scored");
    assert.ok((odd0.anomaly.maskedFeatures ?? 0) > 0, "its unavailable features are masked");
    assert.ok(fine?.anomaly !== undefined);
    assert.equal(l0.anomaly, undefined, "a cut vector is left out");
    assert.ok(timeless.layers[0]?.anomaly !== undefined, "a window without a length is scored, its rates masked");
  });

  it("alerting follows the alert gate per (container, layer): warm-up, a lone spike never, two in a row yes, then clears", async () => {
    const seq = [30, 30, 30, 1, 30, 1, 1, 30, 30, 1, 1];
    const got: Array<[number, boolean]> = [];
    for (const cpu of seq) {
      const b = [windowOf("c-alert", [{ id: "layer-a", vector: baselineVector(rand, cpu) }])];
      await scorer.score(b);
      const a = b[0]?.layers[0]?.anomaly;
      got.push([Math.round(a?.score ?? -1), a?.alerting ?? false]);
    }
    const alerting = got.map(([, x]) => x);
    assert.deepEqual(alerting, [false, false, false, false, false, false, false, false, true, true, false], JSON.stringify(got));
    assert.match(await metrics.registry.metrics(), /shadowlayer_agent_anomaly_alerting_layers 0/);
  });
});

describe("model lifecycle on a node", () => {
  let dir: string;
  let scorer: AnomalyScorer;
  let now = 1_000_000;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-scoring-life-"));
    scorer = new AnomalyScorer({ log: silentLogger(), metrics: new AgentMetrics(), imageOf: (c) => (c === "c1" ? IMAGE : undefined), modelDir: dir, warmupMs: 60_000, minWindows: 60, seed: 1, now: () => now });
    await scorer.start();
    await scorer.ready();
  });
  after(async () => {
    await scorer?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("generic model once the node has enough windows, the image's own after its warm-up, both saved", async () => {
    const rand = seeded(11);
    const feed = async () => {
      const b = [windowOf("c1", [{ id: "l1", vector: baselineVector(rand) }, { id: "l2", vector: baselineVector(rand) }])];
      await scorer.score(b);
      return b[0]?.layers[0]?.anomaly;
    };
    // 3 start windows (not baseline), then 30 windows of 2 layers: the 60 the generic model needs.
    for (let i = 0; i < 33; i++) assert.equal(await feed(), undefined, "no model yet: no anomaly");
    await waitFor("the generic model trained", () => scorer.store.get("generic"), 20_000);
    let a = await feed();
    assert.equal(a?.generic, true);
    // The warm-up has not passed: still no image model, however many windows.
    for (let i = 0; i < 5; i++) await feed();
    assert.equal(scorer.store.get(IMAGE), undefined);
    now += 61_000;
    await feed();
    await waitFor("the image model trained", () => scorer.store.get(IMAGE), 20_000);
    a = await feed();
    assert.equal(a?.generic, false);
    assert.equal(a?.modelVersion, scorer.store.get(IMAGE)?.manifest.version);
    const s = scorer.status();
    assert.deepEqual(s.models.map((m) => [m.scope, m.origin]).sort(), [["generic", "trained"], ["image", "trained"]]);
    assert.ok(s.windowsScored >= 4n);
    assert.ok((await readFile(join(dir, IMAGE_FILE), "utf8")).includes(IMAGE));
    assert.ok((await readFile(join(dir, "generic.json"), "utf8")).length > 0);
  });
});

describe("scoring never holds the spool", () => {
  let scorer: AnomalyScorer;
  let metrics: AgentMetrics;

  before(async () => {
    metrics = new AgentMetrics();
    scorer = new AnomalyScorer({ log: silentLogger(), metrics, imageOf: () => IMAGE, warmupMs: 3_600_000, scoreTimeoutMs: 100 });
    await scorer.start();
    await scorer.ready();
    const pool = scorer.workers;
    assert.ok(pool !== undefined);
    const g = await pool.train(baselineInputs(220, 1), { key: "generic", scope: { kind: "generic" }, minWindows: 200, seed: 1 });
    await scorer.store.install(g.artifact, "generic", "deployed");
  });
  after(async () => {
    await scorer?.stop();
  });

  it("a batch whose scores take longer than the bound goes on without them, counted; batches keep their order", async () => {
    const pool = scorer.workers;
    assert.ok(pool !== undefined);
    // A long training holds the only worker.
    const busy = pool.train(baselineInputs(4000, 9), { key: "generic", scope: { kind: "generic" }, minWindows: 200, epochs: 30 });
    const rand = seeded(12);
    const forwarded: string[] = [];
    const t0 = Date.now();
    const b1 = [windowOf("first", [{ id: "l", vector: baselineVector(rand) }])];
    const b2 = [windowOf("second", [{ id: "l", vector: baselineVector(rand) }])];
    const done = new Promise<void>((resolve) => {
      scorer.process(b1, (b) => forwarded.push(b[0]?.containerId ?? ""));
      scorer.process(b2, (b) => {
        forwarded.push(b[0]?.containerId ?? "");
        resolve();
      });
    });
    await done;
    assert.ok(Date.now() - t0 < 2000, `forwarded after ${Date.now() - t0} ms`);
    assert.deepEqual(forwarded, ["first", "second"]);
    assert.equal(b1[0]?.layers[0]?.anomaly, undefined);
    assert.match(await metrics.registry.metrics(), /shadowlayer_agent_anomaly_unscored_total\{reason="timeout"\} 2/);
    await busy.catch(() => undefined);
  });
});
