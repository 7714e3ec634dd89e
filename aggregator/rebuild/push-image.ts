/**
 * Pushes a saved image to the registry by digest, as a Docker v2 manifest the engine pulls. Each
 * layer tar is gzipped deterministically (level 6, no name or time in the header), so the same
 * layer always makes the same blob and a registry that has it is not sent it again; the gzip goes
 * to a temp file next to the tar, streamed, never held in memory.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { sha256Digest } from "../../common/cosign.js";
import { Code, ShadowError } from "../../common/errors.js";
import { assertReference, assertRepository, MANIFEST_MEDIA_TYPES, type RegistryClient } from "../../common/registry-client.js";
import type { SavedImage, SavedLayer } from "./types.js";

export const DOCKER_CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json";
export const DOCKER_LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip";

export interface PushOptions {
  /** Also put the manifest under this tag, so registry listings and GC keep it readable. */
  tag?: string;
  /** Uncompressed layer bytes gzipped and pushed so far (plus the config), of the total. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  signal?: AbortSignal;
}

export interface PushedImage {
  manifestDigest: string;
  /** host/repo@sha256:… */
  reference: string;
  /** The blobs the manifest names (config and distinct gzipped layers), in bytes. */
  compressedBytes: number;
}

interface Blob {
  digest: string;
  size: number;
  path: string;
}

/**
 * The gzipped blob each layer made before (gzip here is deterministic, so a diffID always gives
 * the same blob): a layer the registry already has is then neither gzipped nor sent again, which
 * is most of a rebase (the app layers are the source's). Bounded; oldest forgotten first.
 */
const knownBlobs = new Map<string, { digest: string; size: number }>();
const KNOWN_BLOBS_MAX = 4096;

function remember(diffId: string, blob: { digest: string; size: number }): void {
  knownBlobs.delete(diffId);
  knownBlobs.set(diffId, { digest: blob.digest, size: blob.size });
  if (knownBlobs.size > KNOWN_BLOBS_MAX) knownBlobs.delete(knownBlobs.keys().next().value as string);
}

/** Hashes what passes through and counts it. */
function hasher(onBytes: (n: number) => void): { stream: Transform; digest: () => string; size: () => number } {
  const h = createHash("sha256");
  let n = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      h.update(chunk);
      n += chunk.length;
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
  return { stream, digest: () => `sha256:${h.digest("hex")}`, size: () => n };
}

/** Gzips a layer tar into a temp file beside it, checking the tar against its diffID on the way. */
async function gzipLayer(layer: SavedLayer, onBytes: (n: number) => void, signal: AbortSignal | undefined): Promise<Blob> {
  const path = `${layer.path}.${randomBytes(6).toString("hex")}.gz`;
  const tar = hasher(onBytes);
  const gz = hasher(() => undefined);
  try {
    await pipeline(createReadStream(layer.path), tar.stream, createGzip({ level: 6 }), gz.stream, createWriteStream(path, { mode: 0o600 }), ...(signal !== undefined ? [{ signal }] : []));
  } catch (err) {
    await rm(path, { force: true });
    if (signal?.aborted === true) throw new ShadowError(Code.Cancelled, `push cancelled while gzipping layer ${layer.diffId}`, { cause: err });
    throw err instanceof ShadowError ? err : new ShadowError(Code.BuildFailed, `cannot gzip layer ${layer.diffId} (${layer.path}): ${(err as Error).message}`, { cause: err });
  }
  const diffId = tar.digest();
  if (diffId !== layer.diffId) {
    await rm(path, { force: true });
    throw new ShadowError(Code.BuildFailed, `layer tar ${layer.path} hashes to ${diffId}, not its diffID ${layer.diffId}`);
  }
  return { digest: gz.digest(), size: gz.size(), path };
}

function checkCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new ShadowError(Code.Cancelled, "push cancelled", { cause: signal.reason });
}

/** The config's rootfs.diff_ids must be the layers in order, or the engine refuses the pull. */
function checkConfig(image: SavedImage): void {
  if (sha256Digest(image.config) !== image.configDigest) {
    throw new ShadowError(Code.InvalidArgument, `image config hashes to ${sha256Digest(image.config)}, not ${image.configDigest}`);
  }
  let diffIds: unknown;
  try {
    diffIds = (JSON.parse(image.config.toString("utf8")) as { rootfs?: { diff_ids?: unknown } }).rootfs?.diff_ids;
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `image config ${image.configDigest} is not JSON`, { cause: err });
  }
  const want = image.layers.map((l) => l.diffId);
  if (!Array.isArray(diffIds) || diffIds.length !== want.length || diffIds.some((d, i) => d !== want[i])) {
    throw new ShadowError(Code.InvalidArgument, `image config ${image.configDigest} lists diff_ids that are not its ${want.length} layers in order`);
  }
}

/**
 * Pushes config and layers (skipping blobs the registry has), then the manifest by its digest and
 * under `tag` when given; the reference returned is what agents pull and the signature names.
 */
export async function pushImage(client: RegistryClient, repo: string, image: SavedImage, opts: PushOptions = {}): Promise<PushedImage> {
  assertRepository(repo);
  if (opts.tag !== undefined) assertReference(opts.tag);
  checkConfig(image);
  const total = image.layers.reduce((n, l) => n + l.size, 0) + image.config.length;
  let done = 0;
  const progress = (n: number): void => {
    done += n;
    opts.onProgress?.(Math.min(done, total), total);
  };

  const byDiffId = new Map<string, { digest: string; size: number }>();
  const made: string[] = [];
  try {
    for (const layer of image.layers) {
      if (byDiffId.has(layer.diffId)) continue;
      checkCancelled(opts.signal);
      const known = knownBlobs.get(layer.diffId);
      if (known !== undefined && (await client.hasBlob(repo, known.digest))) {
        byDiffId.set(layer.diffId, known);
        progress(layer.size);
        continue;
      }
      const blob = await gzipLayer(layer, progress, opts.signal);
      made.push(blob.path);
      byDiffId.set(layer.diffId, blob);
      await client.pushBlob(repo, blob.digest, blob.size, () => createReadStream(blob.path));
      remember(layer.diffId, blob);
      await rm(blob.path, { force: true });
    }
    checkCancelled(opts.signal);
    await client.pushBlob(repo, image.configDigest, image.config.length, () => image.config);
    progress(image.config.length);
  } finally {
    await Promise.all(made.map((p) => rm(p, { force: true })));
  }

  const layers = image.layers.map((l) => {
    const b = byDiffId.get(l.diffId) as { digest: string; size: number };
    return { mediaType: DOCKER_LAYER_MEDIA_TYPE, size: b.size, digest: b.digest };
  });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST_MEDIA_TYPES.dockerManifest,
      config: { mediaType: DOCKER_CONFIG_MEDIA_TYPE, size: image.config.length, digest: image.configDigest },
      layers,
    }),
  );
  const manifestDigest = sha256Digest(manifest);
  await client.putManifest(repo, manifestDigest, manifest, MANIFEST_MEDIA_TYPES.dockerManifest);
  if (opts.tag !== undefined) await client.putManifest(repo, opts.tag, manifest, MANIFEST_MEDIA_TYPES.dockerManifest);
  const compressedBytes = image.config.length + [...byDiffId.values()].reduce((n, b) => n + b.size, 0);
  return { manifestDigest, reference: `${client.host}/${repo}@${manifestDigest}`, compressedBytes };
}
