/**
 * Shadows in a real registry (TLS, htpasswd): a saved image pushed by digest is pulled by the real
 * engine with the same image id; its cosign signature is stored beside it, read back and verified,
 * and refused once tampered; deleting a shadow removes it and its signature; the bytes a shadow
 * adds over its source count shared layers once.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { addedBytes, deleteShadow } from "../../aggregator/rebuild/registry-gc.js";
import { DOCKER_LAYER_MEDIA_TYPE, pushImage } from "../../aggregator/rebuild/push-image.js";
import type { SavedImage, SavedLayer } from "../../aggregator/rebuild/types.js";
import { generateSigningKeys, signatureManifest, signatureTag, signingPayload, signPayload, verifySignature } from "../../common/cosign.js";
import { connectEngine } from "../../common/engine.js";
import { Code, ShadowError } from "../../common/errors.js";
import { MANIFEST_MEDIA_TYPES, RegistryClient } from "../../common/registry-client.js";
import { fetchSignature, storeSignature } from "../../common/registry-signature.js";
import { startRegistry, type TestRegistry } from "../harness/registry.js";
import { rejectsWithCode } from "../harness/rejects-with-code.js";

const sha256 = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A layer tar with the given files, written with tar-stream (fixed mtimes). */
async function layerTar(path: string, files: Record<string, string>): Promise<SavedLayer> {
  const pack = tar.pack();
  for (const [name, text] of Object.entries(files)) pack.entry({ name, mode: 0o755, mtime: new Date(0) }, text);
  pack.finalize();
  const chunks: Buffer[] = [];
  pack.on("data", (c: unknown) => {
    chunks.push(c as Buffer);
  });
  await pipeline(pack, createWriteStream(path));
  const body = Buffer.concat(chunks);
  return { diffId: sha256(body), path, size: body.length };
}

function imageOf(layers: SavedLayer[], cmd: string[]): SavedImage {
  const config = Buffer.from(
    JSON.stringify({
      architecture: process.arch === "arm64" ? "arm64" : "amd64",
      os: "linux",
      config: { Cmd: cmd, Labels: { "org.shadowlayer.test": String(process.pid) } },
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created: "2026-01-01T00:00:00Z", created_by: "test layer" })),
    }),
  );
  return { config, configDigest: sha256(config), layers, repoTags: [] };
}


/** Counts the blobs actually uploaded (those the registry did not have). */
class CountingClient extends RegistryClient {
  uploads: string[] = [];
  override async pushBlob(repo: string, digest: string, size: number, body: () => NodeJS.ReadableStream | Buffer): Promise<void> {
    if (!(await this.hasBlob(repo, digest))) this.uploads.push(digest);
    return super.pushBlob(repo, digest, size, body);
  }
}

describe("shadows in the registry", () => {
  let reg: TestRegistry;
  let c: CountingClient;
  let docker: Docker;
  let dir: string;
  let image: SavedImage;
  const repo = `shadowlayer-test/push-${process.pid}`;
  const keys = generateSigningKeys();
  let pushed: { manifestDigest: string; reference: string; compressedBytes: number };

  before(async () => {
    [reg, { docker }, dir] = await Promise.all([startRegistry(), connectEngine("/var/run/docker.sock"), mkdtemp(join(tmpdir(), "sl-push-"))]);
    c = new CountingClient({ host: reg.host, ca: reg.ca, auth: reg.auth });
    const unique = randomBytes(8).toString("hex");
    image = imageOf(
      [
        await layerTar(join(dir, "base.tar"), { "etc/shadow-test": `base ${unique}\n` }),
        await layerTar(join(dir, "app.tar"), { "app/hello": `#!/bin/sh\necho hello ${unique}\n` }),
      ],
      ["/app/hello"],
    );
  });
  after(async () => {
    if (pushed !== undefined) await docker.getImage(pushed.reference).remove({ force: true }).catch(() => undefined);
    c?.close();
    await reg?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("pushes a saved image by digest and the engine pulls it with the same image id", async () => {
    const progress: Array<[number, number]> = [];
    pushed = await pushImage(c, repo, image, { tag: "shadow-1", onProgress: (d, t) => progress.push([d, t]) });
    assert.match(pushed.reference, new RegExp(`^${reg.host}/${repo}@sha256:[0-9a-f]{64}$`));
    assert.equal(pushed.reference, `${reg.host}/${repo}@${pushed.manifestDigest}`);
    assert.deepEqual(new Set(c.uploads).size, 3, "config and two layers uploaded");

    const m = await c.getManifest(repo, pushed.manifestDigest);
    assert.equal(m.mediaType, MANIFEST_MEDIA_TYPES.dockerManifest);
    const body = JSON.parse(m.body.toString("utf8")) as { config: { digest: string }; layers: Array<{ mediaType: string; size: number; digest: string }> };
    assert.equal(body.config.digest, image.configDigest);
    assert.deepEqual(body.layers.map((l) => l.mediaType), [DOCKER_LAYER_MEDIA_TYPE, DOCKER_LAYER_MEDIA_TYPE]);
    assert.equal(pushed.compressedBytes, image.config.length + body.layers.reduce((n, l) => n + l.size, 0));
    assert.equal((await c.getManifest(repo, "shadow-1")).digest, pushed.manifestDigest);
    const total = image.config.length + image.layers.reduce((n, l) => n + l.size, 0);
    assert.deepEqual(progress.at(-1), [total, total]);
    assert.ok(progress.every(([d], i) => i === 0 || d >= (progress[i - 1]?.[0] ?? 0)), "progress only moves forward");
    // The gzip temp files next to the layer tars are gone.
    assert.deepEqual((await readdir(dir)).sort(), ["app.tar", "base.tar"]);

    const stream = await docker.pull(pushed.reference, { authconfig: { username: reg.auth.username, password: reg.auth.password, serveraddress: reg.host } });
    await new Promise<void>((resolve, reject) =>
      docker.modem.followProgress(stream, (err: Error | null, events: Array<{ error?: string }>) => {
        const failed = events.find((e) => e.error !== undefined);
        if (err !== null || failed !== undefined) reject(err ?? new Error(failed?.error));
        else resolve();
      }),
    );
    const inspected = await docker.getImage(pushed.reference).inspect();
    assert.equal(inspected.Id, image.configDigest);
    assert.deepEqual(inspected.RootFS.Layers, image.layers.map((l) => l.diffId));
  });

  it("makes the same blobs every time: a second push uploads nothing", async () => {
    c.uploads = [];
    const again = await pushImage(c, repo, image);
    assert.equal(again.manifestDigest, pushed.manifestDigest);
    assert.equal(c.uploads.length, 0);
    // An image sharing the base layer uploads only its own layer and config.
    const other = imageOf([image.layers[0] as SavedLayer, await layerTar(join(dir, "other.tar"), { "app/other": "other\n" })], ["/app/other"]);
    await pushImage(c, repo, other);
    assert.equal(c.uploads.length, 2);
    assert.ok(c.uploads.includes(other.configDigest));
    // Another repository has none of them: gzipped again, to the same bytes.
    c.uploads = [];
    const elsewhere = await pushImage(c, `${repo}-copy`, image);
    assert.equal(elsewhere.manifestDigest, pushed.manifestDigest);
    assert.equal(c.uploads.length, 3);
  });

  it("refuses a layer tar that does not match its diffID or a config that does not list the layers; stops when cancelled", async () => {
    const path = join(dir, "swapped.tar");
    const real = await layerTar(path, { "x/y": "one\n" });
    await writeFile(path, Buffer.alloc(real.size, 1));
    await rejectsWithCode(pushImage(c, repo, imageOf([real], ["/x/y"])), Code.BuildFailed, /hashes to .*, not its diffID/);
    const listed = imageOf([image.layers[1] as SavedLayer, image.layers[0] as SavedLayer], ["/app/hello"]);
    await rejectsWithCode(pushImage(c, repo, { ...listed, layers: image.layers }), Code.InvalidArgument, /diff_ids that are not its 2 layers/);
    const ac = new AbortController();
    ac.abort();
    await rejectsWithCode(pushImage(c, repo, image, { signal: ac.signal }), Code.Cancelled);
    assert.deepEqual((await readdir(dir)).filter((n) => n.endsWith(".gz")), []);
    assert.ok((await stat(path)).size === real.size);
  });

  it("stores the signature beside the shadow, reads it back and verifies it", async () => {
    const payload = signingPayload({ dockerReference: `${reg.host}/${repo}`, digest: pushed.manifestDigest });
    const tag = await storeSignature(c, repo, pushed.manifestDigest, payload, signPayload(payload, keys.privateKeyPem));
    assert.equal(tag, signatureTag(pushed.manifestDigest));
    assert.ok((await c.listTags(repo)).includes(tag));
    const got = await fetchSignature(c, repo, pushed.manifestDigest);
    assert.deepEqual(got.payload, payload);
    assert.equal(verifySignature(got.payload, got.signature, keys.publicKeyPem, pushed.manifestDigest).digest, pushed.manifestDigest);
  });

  it("a tampered signature in the registry is refused, and a missing one too", async () => {
    const payload = signingPayload({ dockerReference: `${reg.host}/${repo}`, digest: pushed.manifestDigest });
    const forged = signatureManifest(payload, signPayload(payload, generateSigningKeys().privateKeyPem)).manifest;
    const tag = signatureTag(pushed.manifestDigest);
    const original = (await c.getManifest(repo, tag)).body;
    await c.putManifest(repo, tag, forged, MANIFEST_MEDIA_TYPES.ociManifest);
    const got = await fetchSignature(c, repo, pushed.manifestDigest);
    assert.throws(() => verifySignature(got.payload, got.signature, keys.publicKeyPem, pushed.manifestDigest), (e: unknown) => e instanceof ShadowError && e.code === Code.PermissionDenied);
    await c.putManifest(repo, tag, original, MANIFEST_MEDIA_TYPES.ociManifest);

    const unsigned = imageOf([image.layers[1] as SavedLayer], ["/app/hello"]);
    const u = await pushImage(c, repo, unsigned);
    await rejectsWithCode(fetchSignature(c, repo, u.manifestDigest), Code.PermissionDenied, /has no signature/);
    await deleteShadow(c, repo, u.manifestDigest);
  });

  it("deletes a shadow and its signature, and tolerates them being gone", async () => {
    const sig = await c.getManifest(repo, signatureTag(pushed.manifestDigest));
    assert.deepEqual(await deleteShadow(c, repo, pushed.manifestDigest), { manifest: true, signature: true });
    await rejectsWithCode(c.getManifest(repo, pushed.manifestDigest), Code.NotFound);
    await rejectsWithCode(c.getManifest(repo, "shadow-1"), Code.NotFound);
    await rejectsWithCode(c.getManifest(repo, sig.digest), Code.NotFound);
    await rejectsWithCode(fetchSignature(c, repo, pushed.manifestDigest), Code.PermissionDenied);
    assert.ok(!(await c.listTags(repo)).includes(signatureTag(pushed.manifestDigest)));
    assert.deepEqual(await deleteShadow(c, repo, pushed.manifestDigest), { manifest: false, signature: false });
  });

  it("counts the bytes a shadow adds over its source, shared layers once", () => {
    const src = ["sha256:a", "sha256:b"];
    assert.equal(addedBytes(src, [{ diffId: "sha256:a", size: 100 }, { diffId: "sha256:b", size: 50 }]), 0);
    assert.equal(addedBytes(src, [{ diffId: "sha256:c", size: 70 }, { diffId: "sha256:b", size: 50 }, { diffId: "sha256:d", size: 5 }]), 75);
    assert.equal(addedBytes(src, [{ diffId: "sha256:c", size: 70 }, { diffId: "sha256:c", size: 70 }]), 70);
    assert.equal(addedBytes([], []), 0);
  });
});
