/**
 * An image's layers fetched from the registry it was pulled from, by its manifest digest (the
 * engine's RepoDigests), not through the engine: an engine pull of an image it already has reuses
 * its layer directories, tampered or not. Each blob is decompressed to a tar file and checked
 * against the config's diffID; the config itself must list the same diffIDs as the image on the
 * builder, so the registry's copy is the same image.
 *
 * The client is anything with the two calls of common/registry-client.ts's RegistryClient used
 * here; gzip and uncompressed layers are read (zstd is refused by name: Node has no zstd).
 */
import { createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { Code, ShadowError } from "../../common/errors.js";
import { digestTap } from "./digest-tap.js";
import { parseImageConfig } from "./image-config.js";
import type { SavedLayer } from "./types.js";

/** The part of the registry client this needs (RegistryClient satisfies it). */
export interface LayerBlobSource {
  getManifest(repo: string, reference: string): Promise<{ body: Buffer; mediaType: string; digest: string }>;
  getBlob(repo: string, digest: string): Promise<NodeJS.ReadableStream>;
}

/** A registry holding the image: a client and the repository in it. */
export interface RegistryCopy {
  client: LayerBlobSource;
  repository: string;
  /** The manifest (or index) digest. */
  digest: string;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  platform?: { os?: string; architecture?: string };
}

const MAX_CONFIG_BLOB = 8 * 1024 * 1024;
const REPO_DIGEST = /^([^/]+)\/([a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)@(sha256:[0-9a-f]{64})$/;

/**
 * For restore's `registryFor`: the copy of an image in the registry at `host`, from one of the
 * image's repo digests (`host/repo@sha256:…`); undefined for a digest of another registry.
 */
export function registryCopyFor(client: LayerBlobSource, host: string): (repoDigest: string) => RegistryCopy | undefined {
  return (repoDigest) => {
    const m = REPO_DIGEST.exec(repoDigest);
    if (m === null || m[1] !== host || m[2] === undefined || m[3] === undefined) return undefined;
    return { client, repository: m[2], digest: m[3] };
  };
}

function descriptors(v: unknown): Descriptor[] {
  if (!Array.isArray(v)) return [];
  return v
    .filter((d): d is Record<string, unknown> => typeof d === "object" && d !== null && typeof (d as Record<string, unknown>)["digest"] === "string")
    .map((d) => ({ mediaType: typeof d["mediaType"] === "string" ? d["mediaType"] : "", digest: d["digest"] as string, ...(typeof d["platform"] === "object" && d["platform"] !== null ? { platform: d["platform"] as Descriptor["platform"] & object } : {}) }));
}

function json(body: Buffer, what: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(body.toString("utf8"));
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new ShadowError(Code.InvalidArgument, `${what} is not a JSON object`);
}

async function blobBuffer(src: LayerBlobSource, repo: string, digest: string, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of Readable.from(await src.getBlob(repo, digest)) as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) throw new ShadowError(Code.InvalidArgument, `blob ${digest} is larger than ${max} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/**
 * Layers `from`…end of the image at `copy`, as tar files in `dir`; `diffIds` are the image's on
 * the builder (all of them), which the registry's config must repeat.
 */
export async function registryLayers(copy: RegistryCopy, platform: { os: string; architecture: string }, diffIds: readonly string[], from: number, dir: string): Promise<SavedLayer[]> {
  const { client, repository } = copy;
  let m = await client.getManifest(repository, copy.digest);
  let doc = json(m.body, `manifest ${m.digest}`);
  if (Array.isArray(doc["manifests"])) {
    const pick = descriptors(doc["manifests"]).find((d) => d.platform?.os === platform.os && d.platform?.architecture === platform.architecture);
    if (pick === undefined) throw new ShadowError(Code.NotFound, `${repository}@${copy.digest} has no ${platform.os}/${platform.architecture} image`);
    m = await client.getManifest(repository, pick.digest);
    doc = json(m.body, `manifest ${m.digest}`);
  }
  const config = descriptors([doc["config"]])[0];
  const layers = descriptors(doc["layers"]);
  if (config === undefined) throw new ShadowError(Code.InvalidArgument, `manifest ${m.digest} has no config`);
  const parsed = parseImageConfig(await blobBuffer(client, repository, config.digest, MAX_CONFIG_BLOB), `config ${config.digest}`);
  if (parsed.diffIds.length !== diffIds.length || parsed.diffIds.some((d, i) => diffIds[i] !== d) || layers.length !== diffIds.length) {
    throw new ShadowError(Code.FailedPrecondition, `${repository}@${copy.digest} is not the image on the builder: its layers differ`);
  }
  await mkdir(dir, { recursive: true });
  const out: SavedLayer[] = [];
  for (let i = from; i < layers.length; i++) {
    const d = layers[i];
    const diffId = diffIds[i] ?? "";
    if (d === undefined) continue;
    if (d.mediaType.includes("zstd")) throw new ShadowError(Code.Unimplemented, `layer ${i} of ${repository} is zstd-compressed, which cannot be read here`);
    const gzip = d.mediaType.endsWith("gzip") || d.mediaType.endsWith(".gzip");
    const path = join(dir, `${i}.tar`);
    const hashed = digestTap();
    const blob = Readable.from(await client.getBlob(repository, d.digest));
    if (gzip) await pipeline(blob, createGunzip(), hashed.tap, createWriteStream(path));
    else await pipeline(blob, hashed.tap, createWriteStream(path));
    const got = hashed.digest();
    if (got !== diffId) throw new ShadowError(Code.FailedPrecondition, `layer ${i} from ${repository} hashes to ${got}, not its diffID ${diffId}`);
    out.push({ diffId, path, size: hashed.size() });
  }
  return out;
}
