/**
 * `restore` on a real engine: a file changed by hand in a lower layer's directory on disk (found
 * through layerdb's cache-id) is detected and named, the layers below it are kept byte for byte,
 * the layers from it up are re-made from the image's recipe and squashed into one new layer, and
 * a fresh container of the shadow reads the original content. Squashing applies whiteouts and
 * opaque directories as the engine does (a real image squashed installs the same packages).
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import * as tar from "tar-stream";
import { chainIds } from "../../agent/layers/chain-id.js";
import { loadImage, saveImage } from "../../aggregator/rebuild/image-archive.js";
import { composeConfig, parseImageConfig } from "../../aggregator/rebuild/image-config.js";
import { imageFacts } from "../../aggregator/rebuild/image-facts.js";
import { rescanImage } from "../../aggregator/rebuild/image-rescan.js";
import { verifyLayers } from "../../aggregator/rebuild/layer-verify.js";
import { squashLayers } from "../../aggregator/rebuild/squash-layers.js";
import { recipeStrategy } from "../../aggregator/rebuild/strategies/recipe.js";
import { restoreStrategy, restoreWith } from "../../aggregator/rebuild/strategies/restore.js";
import { followEngine } from "../../common/engine-progress.js";
import { registryCopyFor, type LayerBlobSource } from "../../aggregator/rebuild/registry-layers.js";
import { Code } from "../../common/errors.js";
import { waitFor } from "../harness/engine.js";
import { SOURCE_LABELS, type Strategy } from "../../aggregator/rebuild/types.js";
import { APP_MESSAGE, APP_MESSAGE_PATH, readInFreshContainer, strategyContext, useRebuildImages } from "../harness/rebuild-images.js";
import { ensureInventoryImage } from "../harness/inventory-images.js";
import { tempDir } from "../harness/temp-dir.js";

async function writeTar(path: string, entries: Array<{ name: string; type?: "directory" | "file"; data?: string }>): Promise<string> {
  const p = tar.pack();
  for (const e of entries) {
    if (e.type === "directory") p.entry({ name: e.name, type: "directory", mode: 0o755 });
    else p.entry({ name: e.name, mode: 0o644 }, Buffer.from(e.data ?? ""));
  }
  p.finalize();
  await pipeline(Readable.from(p as AsyncIterable<Buffer>), createWriteStream(path));
  return path;
}

async function listTar(path: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const extract = tar.extract();
  const feed = pipeline((await import("node:fs")).createReadStream(path), extract as unknown as NodeJS.WritableStream);
  for await (const e of extract) {
    const chunks: Buffer[] = [];
    for await (const c of e as AsyncIterable<Buffer>) chunks.push(c);
    out[e.header.name] = e.header.type === "directory" ? "<dir>" : Buffer.concat(chunks).toString();
  }
  await feed;
  return out;
}

describe("rebuild strategy: restore", () => {
  const work = tempDir("sl-restore-");
  const fx = useRebuildImages();
  /** Restore with the recipe strategy as configured with the app's recipe root. */
  const withRecipe = (): Strategy => restoreWith({ recipe: recipeStrategy({ roots: [dirname(fx.images.contextDir)] }) });

  it("with nothing changed on disk, re-makes the top layer from the verified tars into a fresh one", async () => {
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    const n = src.diffIds.length;
    const r = await restoreStrategy.run(strategyContext(fx.builder, { ...src, labels: {} }, join(work.path, "clean"), { reasons: ["performance-anomaly"], sourceLayer: "rw:0123456789ab" }));
    fx.made.push(r.imageId);
    const out = await imageFacts(fx.builder.docker, r.imageId);
    assert.deepEqual(out.diffIds.slice(0, n - 1), src.diffIds.slice(0, n - 1));
    assert.equal(out.diffIds.length, n);
    assert.notEqual(out.diffIds[n - 1], src.diffIds[n - 1], "a new diffID: a new directory");
    assert.equal(r.layersReused, n - 1);
    assert.match(r.detail, /no layer changed on disk; .* from the layers verified on disk/);
    assert.equal(await readInFreshContainer(fx.builder.docker, r.imageId, "/srv/app/build.txt"), "build=1\n");
  });

  it("names the tampered layer and file, and a fresh container of the shadow reads the original", async () => {
    const root = fx.builder.localRoot ?? "";
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    // k: the base's layers; the app's are k (RUN, the message), k+1 (COPY), k+2 (RUN).
    const k = (await imageFacts(fx.builder.docker, fx.images.baseV1)).diffIds.length;
    const ok = (n: number) => new Array<boolean>(n).fill(true);
    assert.equal(src.diffIds.length, k + 3);
    assert.match(withRecipe().applies(src, ["drift"], { baseMap: {} }) ?? "", /^drift: .*recipe/);
    // A recipe label is a source only through the configured recipe strategy and its roots.
    assert.match(restoreStrategy.applies(src, ["drift"], { baseMap: {} }) ?? "", /no registry copy or recipe/);
    assert.match(restoreWith({ recipe: recipeStrategy({ roots: [work.path] }) }).applies(src, ["drift"], { baseMap: {} }) ?? "", /no registry copy or recipe/);
    assert.equal(restoreStrategy.applies(src, ["CVE-2023-4911"], { baseMap: {} }), undefined);
    assert.match(restoreStrategy.applies({ ...src, labels: {} }, ["drift"], { baseMap: {} }) ?? "", /no registry copy or recipe/);
    assert.deepEqual((await verifyLayers(root, src.diffIds)).map((c) => c.ok), ok(k + 3));

    // Layer k (the RUN that wrote the message): its directory, through layerdb, changed by hand.
    const chain = chainIds(src.diffIds)[k]?.replace(/^sha256:/, "") ?? "";
    const cacheId = (await readFile(join(root, "image/overlay2/layerdb/sha256", chain, "cache-id"), "utf8")).trim();
    await writeFile(join(root, "overlay2", cacheId, "diff", APP_MESSAGE_PATH), "tampered on the node\n");
    assert.equal(await readInFreshContainer(fx.builder.docker, fx.images.app, `/${APP_MESSAGE_PATH}`), "tampered on the node\n");

    const checks = await verifyLayers(root, src.diffIds);
    assert.deepEqual(checks.map((c) => c.ok), [...ok(k), false, true, true]);
    assert.deepEqual(checks[k]?.changed, [{ path: `/${APP_MESSAGE_PATH}`, reason: "content" }]);

    const lines: string[] = [];
    const started = performance.now();
    const r = await withRecipe().run(strategyContext(fx.builder, src, join(work.path, "run"), { reasons: ["drift"], sourceLayer: "rw:0123456789ab", log: (l) => lines.push(l) }));
    console.log(`restore of the 3-layer app: ${((performance.now() - started) / 1000).toFixed(2)} s`);
    fx.made.push(r.imageId);
    assert.match(r.detail, new RegExp(`layer ${k} \\(${src.diffIds[k]}\\) does not match .*changed: /${APP_MESSAGE_PATH} \\(content\\)`));
    assert.ok(lines.some((l) => l.includes(`/${APP_MESSAGE_PATH}`)), "the job's log names the file");

    const out = await imageFacts(fx.builder.docker, r.imageId);
    assert.deepEqual(out.diffIds.slice(0, k), src.diffIds.slice(0, k), "the layers below are kept byte for byte");
    assert.equal(out.diffIds.length, k + 1, "the three app layers squashed into one");
    assert.ok(!src.diffIds.includes(out.diffIds[k] ?? ""), "the squashed layer is new");
    assert.deepEqual(r.layerIds, out.diffIds);
    assert.equal(r.layersReused, k);
    assert.equal(out.labels[SOURCE_LABELS.baseName], fx.images.baseV1, "the source's labels are kept");
    assert.equal(out.labels["shadowlayer.strategy"], "test");
    assert.deepEqual((await verifyLayers(root, out.diffIds)).map((c) => c.ok), ok(k + 1));

    assert.equal(await readInFreshContainer(fx.builder.docker, r.imageId, `/${APP_MESSAGE_PATH}`), APP_MESSAGE);
    assert.equal(await readInFreshContainer(fx.builder.docker, r.imageId, "/etc/app.conf"), "threads=2\n");
    assert.equal(await readInFreshContainer(fx.builder.docker, r.imageId, "/srv/app/build.txt"), "build=1\n");
  });

  it("fails clearly when there is no good source", async () => {
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    const bare = { ...src, labels: {}, repoDigests: [] };
    await assert.rejects(restoreStrategy.run(strategyContext(fx.builder, bare, join(work.path, "bare"), { reasons: ["drift"] })), /no good source for layer \d+ \(sha256:[0-9a-f]+\) does not match its diffID.*no registry copy \(repo digest\) and no recipe label/);
  });

  it("squashes a real image's layers into one that installs the same packages (a whiteout and an opaque directory in them)", async () => {
    const { image } = await ensureInventoryImage(fx.builder.docker);
    const saved = await saveImage(fx.builder.docker, image, join(work.path, "inv"));
    const q = await squashLayers(saved.layers.map((l) => l.path), join(work.path, "inv.tar"));
    const config = composeConfig(parseImageConfig(saved.config), { diffIds: [q.diffId], history: [{ created_by: "squashed" }] });
    const id = await loadImage(fx.builder.docker, { config, layers: [{ diffId: q.diffId, path: q.path, size: q.size }] });
    fx.made.push(id);
    const pkgs = async (ref: string, d: string) => (await rescanImage(fx.builder, ref, join(work.path, d))).packages.map((p) => `${p.type}:${p.name}@${p.version}`).sort();
    const before = await pkgs(image, "scan-a");
    assert.ok(before.includes("pypi:idna@3.4") && !before.some((p) => p.startsWith("pypi:six") || p.startsWith("npm:left-pad")));
    assert.deepEqual(await pkgs(id, "scan-b"), before);
  });

  it("squashes layers with whiteouts and opaque directories as the engine applies them", async () => {
    const d = work.path;
    const l0 = await writeTar(join(d, "s0.tar"), [
      { name: "a/", type: "directory" },
      { name: "a/keep", data: "0" },
      { name: "a/gone", data: "0" },
      { name: "o/", type: "directory" },
      { name: "o/old", data: "0" },
      { name: "r/", type: "directory" },
      { name: "r/lower", data: "0" },
    ]);
    const l1 = await writeTar(join(d, "s1.tar"), [
      { name: "a/.wh.gone", data: "" },
      { name: "o/", type: "directory" },
      { name: "o/.wh..wh..opq", data: "" },
      { name: "o/new", data: "1" },
      { name: ".wh.r", data: "" },
      { name: "below/.wh.x", data: "" },
    ]);
    const l2 = await writeTar(join(d, "s2.tar"), [
      { name: "r/", type: "directory" },
      { name: "a/keep", data: "2" },
    ]);
    const s = await squashLayers([l0, l1, l2], join(d, "squashed.tar"));
    assert.deepEqual(await listTar(s.path), {
      "a/": "<dir>",
      "a/keep": "2",
      "a/.wh.gone": "",
      "o/": "<dir>",
      "o/.wh..wh..opq": "",
      "o/new": "1",
      "below/.wh.x": "",
      "r/": "<dir>",
      "r/.wh..wh..opq": "",
    });
    const marked = await squashLayers([l0, l1, l2], join(d, "marked.tar"), { marker: "job-1" });
    assert.notEqual(marked.diffId, s.diffId, "the marker makes the bytes new");
  });
});

/** The two registry calls restore makes, over plain HTTP to a loopback registry (the engine trusts 127.0.0.0/8 without TLS). */
function loopbackRegistry(host: string): LayerBlobSource {
  const accept = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
  ].join(", ");
  return {
    async getManifest(repo, reference) {
      const res = await fetch(`http://${host}/v2/${repo}/manifests/${reference}`, { headers: { accept } });
      assert.equal(res.status, 200, `manifest ${reference}`);
      return { body: Buffer.from(await res.arrayBuffer()), mediaType: res.headers.get("content-type") ?? "", digest: res.headers.get("docker-content-digest") ?? "" };
    },
    async getBlob(repo, digest) {
      const res = await fetch(`http://${host}/v2/${repo}/blobs/${digest}`);
      assert.equal(res.status, 200, `blob ${digest}`);
      return Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>);
    },
  };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe("rebuild strategy: restore from the registry the image was pushed to", () => {
  const work = tempDir("sl-restore-reg-");
  const fx = useRebuildImages();
  let registry: ChildProcess | undefined;
  let host = "";
  let pushed = "";

  before(async () => {
    const port = await freePort();
    host = `127.0.0.1:${port}`;
    const config = join(work.path, "registry.yml");
    await writeFile(config, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(work.path, "data")}\nhttp:\n  addr: ${host}\n`);
    registry = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
    await waitFor("the registry", async () => (await fetch(`http://${host}/v2/`).then((r) => r.status === 200).catch(() => false)) || undefined, 20_000, 100);
    pushed = `${host}/rebuild/app`;
    await fx.images.docker.getImage(fx.images.app).tag({ repo: pushed, tag: "1" });
    await followEngine(fx.images.docker, await fx.images.docker.getImage(`${pushed}:1`).push({ authconfig: { serveraddress: host } }), "push", Code.Internal);
  });
  after(async () => {
    await fx.images?.docker.getImage(`${pushed}:1`).remove().catch(() => undefined);
    if (registry?.pid !== undefined) process.kill(registry.pid);
  });

  it("re-makes the tampered layer from the registry's blobs", async () => {
    const root = fx.builder.localRoot ?? "";
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    const digest = src.repoDigests.find((d) => d.startsWith(`${pushed}@`))?.slice(pushed.length + 1) ?? "";
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
    const k = (await imageFacts(fx.builder.docker, fx.images.baseV1)).diffIds.length;
    const cacheId = (await readFile(join(root, "image/overlay2/layerdb/sha256", chainIds(src.diffIds)[k]?.replace(/^sha256:/, "") ?? "", "cache-id"), "utf8")).trim();
    await writeFile(join(root, "overlay2", cacheId, "diff", APP_MESSAGE_PATH), "tampered again\n");

    const restore = restoreWith({ registryFor: registryCopyFor(loopbackRegistry(host), host) });
    assert.deepEqual(registryCopyFor(loopbackRegistry(host), "other.example:5000")(`${pushed}@${digest}`), undefined, "another registry's digest is not this one's");
    // No recipe: the registry is the only good source.
    const facts = { ...src, labels: {} };
    assert.match(restore.applies(facts, ["drift"], { baseMap: {} }) ?? "", /re-made from the registry copy/);
    const r = await restore.run(strategyContext(fx.builder, facts, join(work.path, "run"), { reasons: ["drift"] }));
    fx.made.push(r.imageId);
    assert.match(r.detail, new RegExp(`changed: /${APP_MESSAGE_PATH} \\(content\\); layers ${k}-${k + 2} re-made from registry rebuild/app@${digest}`));
    const out = await imageFacts(fx.builder.docker, r.imageId);
    assert.deepEqual(out.diffIds.slice(0, k), src.diffIds.slice(0, k));
    assert.equal(out.diffIds.length, k + 1);
    assert.equal(await readInFreshContainer(fx.builder.docker, r.imageId, `/${APP_MESSAGE_PATH}`), APP_MESSAGE);
    assert.equal(await readInFreshContainer(fx.builder.docker, r.imageId, "/srv/app/build.txt"), "build=1\n");
  });
});
