/**
 * The `recipe` strategy on the real engine: an image whose labels name a build context under a
 * recipe root is rebuilt from it (a new image, the shadow's labels, the build's log, the builder's
 * cgroup limits seen from inside a build step); labels pointing anywhere else are refused before
 * anything is built; a failing step fails with its error; a cancelled build stops in the engine.
 */
import assert from "node:assert/strict";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { Code, ShadowError } from "../../common/errors.js";
import { listContext, packContext } from "../../aggregator/rebuild/recipe-context.js";
import { baseImages, isRegistryReference, recipeStrategy } from "../../aggregator/rebuild/strategies/recipe.js";
import { SHADOW_LABELS, SOURCE_LABELS, type BuildLimits, type ImageFacts, type StrategyContext } from "../../aggregator/rebuild/types.js";
import { testEngine, waitFor, type TestEngine } from "../harness/engine.js";
import { tempDir } from "../harness/temp-dir.js";

const TAG = `shadowlayer-test/recipe-src:${process.pid}`;
const LIMITS: BuildLimits = {
  cpusetCpus: String(availableParallelism() - 1),
  cpuPeriod: 100_000,
  cpuQuota: 50_000,
  cpuShares: 256,
  memoryBytes: 256 * 1024 * 1024,
};
/** Prints what the build step's cgroup allows, cgroup v1 or v2. */
const SHOW_LIMITS =
  "RUN /bin/busybox grep Cpus_allowed_list /proc/self/status; " +
  "echo quota $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max); " +
  "echo memory $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)";

async function imageFacts(docker: Docker, ref: string): Promise<ImageFacts> {
  const i = (await docker.getImage(ref).inspect()) as unknown as { Id: string; Config: { Labels: Record<string, string> | null }; RootFS: { Layers: string[] }; RepoDigests: string[]; Os: string; Architecture: string };
  return { imageId: i.Id, name: ref, labels: i.Config.Labels ?? {}, diffIds: i.RootFS.Layers, history: [], repoDigests: i.RepoDigests, os: i.Os, architecture: i.Architecture };
}

/** Facts of an image that was never built: only its labels matter to the checks before a build. */
function labelled(labels: Record<string, string>): ImageFacts {
  return { imageId: "sha256:0", name: "hostile", labels, diffIds: [], history: [], repoDigests: [], os: "linux", architecture: "amd64" };
}

describe("recipe strategy", () => {
  const tmp = tempDir("sl-recipe-");
  let eng: TestEngine;
  let root: string;
  const made: string[] = [];
  let jobN = 0;

  function context(facts: ImageFacts, signal = new AbortController().signal): StrategyContext & { lines: string[] } {
    const lines: string[] = [];
    const jobId = `test-${process.pid}-${++jobN}`;
    return {
      lines,
      jobId,
      facts,
      reasons: ["CVE-2024-0727"],
      sourceLayer: facts.diffIds.at(-1) ?? "",
      vulnerable: [],
      builder: { name: "local", docker: eng.docker, limits: LIMITS },
      labels: { [SHADOW_LABELS.strategy]: "recipe", [SHADOW_LABELS.job]: jobId, [SHADOW_LABELS.reason]: "CVE-2024-0727" },
      baseMap: {},
      workDir: tmp.path,
      log: (l) => lines.push(l),
      step: (_name, fn) => fn(),
      signal,
    };
  }

  async function imagesOfJob(jobId: string): Promise<number> {
    return (await eng.docker.listImages({ all: true, filters: { label: [`${SHADOW_LABELS.job}=${jobId}`] } })).length;
  }

  async function recipeDir(name: string, dockerfile: string, files: Record<string, string> = {}): Promise<string> {
    const dir = join(root, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "Dockerfile"), dockerfile);
    for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text);
    return dir;
  }

  before(async () => {
    eng = await testEngine();
    root = join(tmp.path, "recipes");
    await mkdir(root);
  });
  after(async () => {
    for (const id of made.reverse()) await eng.docker.getImage(id).remove({ force: true }).catch(() => undefined);
  });

  it("rebuilds an image from its declared context, under the builder's limits", async () => {
    const dir = await recipeDir("app", `FROM ${eng.base}\nRUN echo built > /built.txt\nCOPY hello.txt /hello.txt\n${SHOW_LIMITS}\n`, { "hello.txt": "hello\n" });
    // The source image, built from the same recipe and labelled with it.
    const listed = await listContext(dir);
    const src = await eng.docker.buildImage(packContext(dir, listed.entries), { t: TAG, rm: true, forcerm: true, networkmode: "host", labels: { [SOURCE_LABELS.recipeContext]: "app" } });
    await new Promise((resolve, reject) => eng.docker.modem.followProgress(src, (err) => (err ? reject(err) : resolve(undefined))));
    const facts = await imageFacts(eng.docker, TAG);
    made.push(facts.imageId);

    const strategy = recipeStrategy({ roots: [root] });
    assert.match(strategy.applies(facts, ["CVE-2024-0727"], { baseMap: {} }) ?? "", /^recipe .*\/recipes\/app \(Dockerfile\) under recipe root /);
    const ctx = context(facts);
    const r = await strategy.run(ctx);
    made.push(r.imageId);

    assert.match(r.imageId, /^sha256:[0-9a-f]{64}$/);
    assert.notEqual(r.imageId, facts.imageId, "a new image");
    const shadow = await imageFacts(eng.docker, r.imageId);
    assert.equal(shadow.labels[SHADOW_LABELS.job], ctx.jobId);
    assert.equal(shadow.labels[SHADOW_LABELS.strategy], "recipe");
    assert.equal(shadow.labels[SOURCE_LABELS.recipeContext], "app", "the recipe stays declared on the shadow");
    assert.deepEqual(r.layerIds, shadow.diffIds);
    assert.equal(r.layerIds.length, facts.diffIds.length);
    assert.ok(r.layersReused >= 1 && r.layersReused < r.layerIds.length, `the base layer reused, the rebuilt ones new (${r.layersReused})`);
    assert.match(r.detail, /no cache/);
    // The build's log, line by line, and the limits as the build step saw them.
    assert.ok(ctx.lines.some((l) => /^Step 1\/\d+ : FROM /.test(l)), ctx.lines.join("\n"));
    assert.ok(!ctx.lines.some((l) => /Using cache/.test(l)), "no cache");
    assert.ok(ctx.lines.some((l) => l === `Cpus_allowed_list:\t${LIMITS.cpusetCpus}`), ctx.lines.join("\n"));
    assert.ok(ctx.lines.some((l) => l === "quota 50000" || l === "quota 50000 100000"), ctx.lines.join("\n"));
    assert.ok(ctx.lines.includes(`memory ${LIMITS.memoryBytes}`), ctx.lines.join("\n"));
  });

  it("never follows a recipe when no recipe root is configured, and says so", () => {
    const v = recipeStrategy({ roots: [] }).explain(labelled({ [SOURCE_LABELS.recipeContext]: "app" }));
    assert.equal(v.applies, false);
    assert.match(v.reason, /no --recipe-root is configured/);
    assert.match(recipeStrategy({ roots: [] }).explain(labelled({})).reason, /no shadowlayer\.recipe\.context label/);
  });

  it("refuses labels that point outside the recipe roots, before building anything", async () => {
    await recipeDir("ok", `FROM ${eng.base}\nRUN echo should-not-run\n`);
    await symlink("/etc", join(root, "escape"));
    await mkdir(join(tmp.path, "outside"));
    await writeFile(join(tmp.path, "outside", "Dockerfile"), `FROM ${eng.base}\n`);
    await symlink(join(tmp.path, "outside", "Dockerfile"), join(root, "ok", "Linked"));
    await symlink(join(tmp.path, "outside"), join(root, "ok", "out"));
    const strategy = recipeStrategy({ roots: [root] });
    const hostile: Array<[Record<string, string>, RegExp]> = [
      [{ [SOURCE_LABELS.recipeContext]: "/etc" }, /resolves to \/etc, outside every recipe root/],
      [{ [SOURCE_LABELS.recipeContext]: "../.." }, /outside every recipe root/],
      [{ [SOURCE_LABELS.recipeContext]: "escape" }, /"escape" resolves to \/etc, outside every recipe root/],
      [{ [SOURCE_LABELS.recipeContext]: "ok/out" }, /"ok\/out" resolves to .*\/outside, outside every recipe root/],
      [{ [SOURCE_LABELS.recipeContext]: "ok", [SOURCE_LABELS.recipeDockerfile]: "../../outside/Dockerfile" }, /expected a path inside the context directory/],
      [{ [SOURCE_LABELS.recipeContext]: "ok", [SOURCE_LABELS.recipeDockerfile]: "/etc/passwd" }, /expected a path inside the context directory/],
      [{ [SOURCE_LABELS.recipeContext]: "ok", [SOURCE_LABELS.recipeDockerfile]: "Linked" }, /resolves to .*outside\/Dockerfile, outside the context/],
    ];
    for (const [labels, why] of hostile) {
      const v = strategy.explain(labelled(labels));
      assert.equal(v.applies, false, JSON.stringify(labels));
      assert.match(v.reason, why);
      const ctx = context(labelled(labels));
      await assert.rejects(strategy.run(ctx), (e: unknown) => e instanceof ShadowError && e.code === Code.PermissionDenied && why.test(e.message));
      assert.deepEqual(ctx.lines, [], "nothing built, nothing logged");
      assert.equal(await imagesOfJob(ctx.jobId), 0);
    }
    assert.match(strategy.explain(labelled({ [SOURCE_LABELS.recipeContext]: "missing" })).reason, /cannot be resolved \(ENOENT\)/);
  });

  it("bounds the context, naming the bound", async () => {
    await recipeDir("big", `FROM ${eng.base}\n`, { a: "1", b: "2", c: "3", d: "x".repeat(100) });
    const facts = labelled({ [SOURCE_LABELS.recipeContext]: "big" });
    await assert.rejects(recipeStrategy({ roots: [root], bounds: { maxEntries: 3, maxBytes: 1 << 20 } }).run(context(facts)), /more than 3 entries \(bound: entries\)/);
    await assert.rejects(recipeStrategy({ roots: [root], bounds: { maxEntries: 100, maxBytes: 50 } }).run(context(facts)), /more than 50 bytes of files \(bound: bytes\)/);
  });

  it("sends what the context's .dockerignore keeps, and the Dockerfile always", async () => {
    const dir = await recipeDir("ignoring", `FROM ${eng.base}\n`, {
      ".dockerignore": "# build output\nDockerfile\n/node_modules\n*.log\n!keep.log\n**/secret\nweird[0-9].txt\n",
      "a.log": "",
      "keep.log": "",
      "weird1.txt": "",
      "weirdx.txt": "",
      "app.js": "",
    });
    await mkdir(join(dir, "node_modules", "m"), { recursive: true });
    await writeFile(join(dir, "node_modules", "m", "index.js"), "");
    await mkdir(join(dir, "src", "deep"), { recursive: true });
    await writeFile(join(dir, "src", "deep", "secret"), "");
    await writeFile(join(dir, "src", "main.js"), "");
    const listed = await listContext(dir, undefined, ["Dockerfile"]);
    assert.deepEqual(
      listed.entries.map((e) => e.name),
      [".dockerignore", "Dockerfile", "app.js", "keep.log", "src", "src/deep", "src/main.js", "weirdx.txt"],
    );
  });

  it("fails a build whose step fails, with the step's error in the log tail, leaving no image of its steps", async () => {
    await recipeDir("fails", `FROM ${eng.base}\nRUN echo step-one > /one\nRUN echo about to fail && exit 3\n`);
    const ctx = context(labelled({ [SOURCE_LABELS.recipeContext]: "fails" }));
    await assert.rejects(recipeStrategy({ roots: [root] }).run(ctx), (e: unknown) => e instanceof ShadowError && e.code === Code.BuildFailed && /returned a non-zero code: 3/.test(e.message));
    assert.ok(ctx.lines.includes("about to fail"), ctx.lines.join("\n"));
    assert.match(ctx.lines.at(-1) ?? "", /returned a non-zero code: 3/);
    assert.equal(await imagesOfJob(ctx.jobId), 0);
    // The first step's image (" ---> id" after it) is removed; the base (after FROM) is not.
    const ids = ctx.lines.map((l) => /^ ---> ([0-9a-f]{12})$/.exec(l)?.[1]).filter((id): id is string => id !== undefined);
    assert.equal(ids.length, 2, ctx.lines.join("\n"));
    await assert.rejects(eng.docker.getImage(ids[1] ?? "").inspect(), /no such image/i);
    await eng.docker.getImage(ids[0] ?? "").inspect();
  });

  it("pulls a base named with a registry host; an unreachable registry with a local copy does not fail the build", async () => {
    const ref = `127.0.0.1:1/shadowlayer-test/base:${process.pid}`;
    await eng.docker.getImage(eng.base).tag({ repo: ref.slice(0, ref.lastIndexOf(":")), tag: String(process.pid) });
    try {
      await recipeDir("pulled", `FROM ${ref}\nRUN echo on-local-copy\n`);
      const ctx = context(labelled({ [SOURCE_LABELS.recipeContext]: "pulled" }));
      const r = await recipeStrategy({ roots: [root] }).run(ctx);
      made.push(r.imageId);
      assert.ok(ctx.lines.some((l) => l.startsWith(`pull ${ref} failed (`) && l.endsWith("building on the builder's copy")), ctx.lines.join("\n"));
      assert.match(r.detail, /a base not pulled \(see the log\)/);
    } finally {
      await eng.docker.getImage(ref).remove().catch(() => undefined);
    }
    await recipeDir("nopull", "FROM 127.0.0.1:1/shadowlayer-test/absent:1\n");
    await assert.rejects(recipeStrategy({ roots: [root] }).run(context(labelled({ [SOURCE_LABELS.recipeContext]: "nopull" }))), /base 127\.0\.0\.1:1\/shadowlayer-test\/absent:1 could not be pulled .* and the builder has no copy/);
  });

  it("stops the build in the engine when the job is cancelled", async () => {
    const marker = `sl-cancel-${process.pid}`;
    await recipeDir("slow", `FROM ${eng.base}\nRUN sleep 120 # ${marker}\n`);
    const ac = new AbortController();
    const ctx = context(labelled({ [SOURCE_LABELS.recipeContext]: "slow" }), ac.signal);
    const running = recipeStrategy({ roots: [root] }).run(ctx);
    const stepContainers = async () => (await eng.docker.listContainers({ all: true })).filter((c) => c.Command.includes(marker));
    await waitFor("the slow step running", async () => ((await stepContainers()).some((c) => c.State === "running") ? true : undefined), 20_000, 100);
    ac.abort(new ShadowError(Code.Cancelled, "cancelled by the test"));
    await assert.rejects(running, /cancelled by the test/);
    await waitFor("the step's container gone", async () => ((await stepContainers()).length === 0 ? true : undefined), 20_000, 200);
  });

  it("reads the bases of a Dockerfile", () => {
    const df = "# syntax\nFROM --platform=linux/amd64 127.0.0.1:5000/base:2 AS build\nRUN x \\\n  y\nfrom build\nFROM scratch\nFROM $BASE\nFROM debian:12\nFROM registry.example/app@sha256:00\n";
    assert.deepEqual(baseImages(df), ["127.0.0.1:5000/base:2", "debian:12", "registry.example/app@sha256:00"]);
    assert.deepEqual(["127.0.0.1:5000/base:2", "debian:12", "localhost/x", "library/debian", "registry.example/app"].map(isRegistryReference), [true, false, true, false, true]);
  });
});
