/**
 * Images in and out of an engine as docker-archive tars, streamed: `docker save` is unpacked into
 * a work directory (each layer tar a file, hashed as it is written, never held in memory) and
 * checked against the config's diffIDs; `loadImage` packs a config and layer files into the same
 * format and streams it into `docker load`. The archive comes from an engine that may hold
 * hostile images: entry names are checked (no absolute paths, no `..`), the metadata files read
 * whole are capped, and so is the number of entries.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, stat } from "node:fs/promises";
import { join, posix } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { Code, ShadowError } from "../../common/errors.js";
import { copyIntoEntry } from "./tar-copy.js";
import { digestTap } from "./digest-tap.js";
import { followEngine } from "../../common/engine-progress.js";
import { MAX_CONFIG_BYTES, parseImageConfig } from "./image-config.js";
import type { SavedImage, SavedLayer } from "./types.js";

/** manifest.json of one image is a few hundred bytes per layer. */
const MAX_MANIFEST_BYTES = 1024 * 1024;
/** An image of 127 layers (the overlay limit) has a few hundred entries in its archive. */
const MAX_ENTRIES = 10_000;

/** An archive entry name that stays inside the archive: relative, no `..`, no NUL; normalised. */
export function safeArchiveName(name: string): string {
  if (name === "" || name.includes("\0") || name.startsWith("/")) throw new ShadowError(Code.InvalidArgument, `archive entry ${JSON.stringify(name.slice(0, 200))} has an absolute or empty name`);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.some((p) => p === "..")) throw new ShadowError(Code.InvalidArgument, `archive entry ${JSON.stringify(name.slice(0, 200))} leaves the archive (..)`);
  return parts.join("/");
}

interface StoredEntry {
  path: string;
  size: number;
  sha256: string;
}

/** Writes one entry's bytes to `path`, hashing them; at most `max` bytes. */
async function storeEntry(entry: AsyncIterable<Buffer>, path: string, max: number, name: string): Promise<StoredEntry> {
  const d = digestTap(max, (m) => new ShadowError(Code.InvalidArgument, `archive entry ${name} is larger than ${m} bytes`));
  await pipeline(entry, d.tap, createWriteStream(path));
  return { path, size: d.size(), sha256: d.digest() };
}

function manifestOf(buf: Buffer): { config: string; layers: string[]; repoTags: string[] } {
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString("utf8"));
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, "the saved image's manifest.json is not JSON", { cause: err });
  }
  const first: unknown = Array.isArray(raw) ? raw[0] : undefined;
  if (!Array.isArray(raw) || raw.length !== 1 || typeof first !== "object" || first === null) {
    throw new ShadowError(Code.InvalidArgument, "the saved image's manifest.json does not describe exactly one image");
  }
  const m = first as Record<string, unknown>;
  const layers = m["Layers"];
  const tags = m["RepoTags"];
  if (typeof m["Config"] !== "string" || !Array.isArray(layers) || !layers.every((l): l is string => typeof l === "string")) {
    throw new ShadowError(Code.InvalidArgument, "the saved image's manifest.json lacks Config or Layers");
  }
  return {
    config: safeArchiveName(m["Config"]),
    layers: layers.map((l) => safeArchiveName(l)),
    repoTags: Array.isArray(tags) ? tags.filter((t): t is string => typeof t === "string") : [],
  };
}

/**
 * `docker save REF` unpacked into `dir` (which it creates): the config, the layer tars as files,
 * each layer's sha256 checked against its diffID (a mismatch names the layer). The engine checks
 * its own copies too as it saves: a tampered layer usually fails the stream, reported here.
 */
export async function saveImage(docker: Docker, ref: string, dir: string): Promise<SavedImage> {
  let source: NodeJS.ReadableStream;
  try {
    source = await docker.getImage(ref).get();
  } catch (err) {
    throw new ShadowError(Code.NotFound, `cannot save image ${ref}: ${ShadowError.from(err).message}`, { cause: err });
  }
  return unpackImageArchive(source, dir, ref);
}

/** A docker-archive tar (one image) unpacked into `dir` and checked; `what` names it in errors. */
export async function unpackImageArchive(source: NodeJS.ReadableStream, dir: string, what: string): Promise<SavedImage> {
  await mkdir(dir, { recursive: true });
  const files = new Map<string, StoredEntry>();
  const links = new Map<string, string>();
  const extract = tar.extract();
  let n = 0;
  const feed = pipeline(source, extract as unknown as NodeJS.WritableStream);
  feed.catch(() => undefined);
  try {
    for await (const entry of extract) {
      if (++n > MAX_ENTRIES) throw new ShadowError(Code.InvalidArgument, `the saved image ${what} has more than ${MAX_ENTRIES} archive entries`);
      const name = safeArchiveName(entry.header.name);
      if (entry.header.type === "file" || entry.header.type === "contiguous-file") {
        // Metadata files are read whole later: cap them now; layer tars are bounded by the disk.
        const max = name === "manifest.json" ? MAX_MANIFEST_BYTES : name.endsWith(".json") || name === "repositories" ? MAX_CONFIG_BYTES : Number.MAX_SAFE_INTEGER;
        files.set(name, await storeEntry(entry as AsyncIterable<Buffer>, join(dir, `entry-${n}`), max, name));
      } else {
        // A layer saved twice is a symlink to the first copy (`../<id>/layer.tar`).
        if (entry.header.type === "symlink" && typeof entry.header.linkname === "string") {
          links.set(name, safeArchiveName(posix.join(posix.dirname(name), entry.header.linkname)));
        }
        entry.resume();
      }
    }
    await feed;
  } catch (err) {
    extract.destroy();
    (source as Readable).destroy?.();
    const e = ShadowError.from(err);
    throw new ShadowError(e.code === Code.InvalidArgument ? Code.InvalidArgument : Code.BuildFailed, `cannot save image ${what}: ${e.message}`, { cause: err });
  }
  const fileOf = (name: string): StoredEntry => {
    let at = name;
    for (let hop = 0; hop < 8 && !files.has(at) && links.has(at); hop++) at = links.get(at) ?? at;
    const f = files.get(at);
    if (f === undefined) throw new ShadowError(Code.InvalidArgument, `the saved image ${what} names ${name}, which its archive does not hold`);
    return f;
  };
  const manifestFile = files.get("manifest.json");
  if (manifestFile === undefined) throw new ShadowError(Code.InvalidArgument, `the saved image ${what} has no manifest.json`);
  const manifest = manifestOf(await readFile(manifestFile.path));
  const configFile = fileOf(manifest.config);
  const config = await readFile(configFile.path);
  const parsed = parseImageConfig(config, `config of ${what}`);
  if (parsed.diffIds.length !== manifest.layers.length) {
    throw new ShadowError(Code.InvalidArgument, `the saved image ${what} has ${manifest.layers.length} layer files for ${parsed.diffIds.length} diffIDs`);
  }
  const layers: SavedLayer[] = manifest.layers.map((name, i) => {
    const f = fileOf(name);
    const diffId = parsed.diffIds[i] ?? "";
    if (f.sha256 !== diffId) {
      throw new ShadowError(Code.FailedPrecondition, `layer ${i} (${diffId}) of ${what} does not match its diffID: the saved tar hashes to ${f.sha256}`);
    }
    return { diffId, path: f.path, size: f.size };
  });
  return { config, configDigest: configFile.sha256, layers, repoTags: manifest.repoTags };
}

/** The docker-archive tar of one image: layer files, then the config, then manifest.json. */
async function packArchive(p: tar.Pack, image: { config: Buffer; layers: SavedLayer[] }, configName: string, tag: string | undefined): Promise<void> {
  const names: string[] = [];
  for (const [i, l] of image.layers.entries()) {
    const name = `layers/${i}.tar`;
    const size = (await stat(l.path)).size;
    await copyIntoEntry(p.entry({ name, size, mode: 0o644, mtime: new Date(0) }) as unknown as Writable, createReadStream(l.path));
    names.push(name);
  }
  p.entry({ name: configName, mode: 0o644, mtime: new Date(0) }, image.config);
  const manifest = [{ Config: configName, RepoTags: tag === undefined ? null : [tag], Layers: names }];
  p.entry({ name: "manifest.json", mode: 0o644, mtime: new Date(0) }, Buffer.from(JSON.stringify(manifest)));
  p.finalize();
}

/**
 * Loads an image made of `config` and the layer tars (bottom first, matching its diff_ids) into
 * the engine, tagged `tag` if given; returns its id (the config's digest), checked with the engine.
 */
export async function loadImage(docker: Docker, image: { config: Buffer; layers: SavedLayer[] }, tag?: string): Promise<string> {
  const parsed = parseImageConfig(image.config, "the image config to load");
  if (parsed.diffIds.length !== image.layers.length || parsed.diffIds.some((d, i) => image.layers[i]?.diffId !== d)) {
    throw new ShadowError(Code.Internal, "the image to load has layers that do not match its config's diff_ids");
  }
  const hex = createHash("sha256").update(image.config).digest("hex");
  const p = tar.pack();
  const packing = packArchive(p, image, `${hex}.json`, tag).catch((err: unknown) => {
    p.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  });
  const body = Readable.from(p as AsyncIterable<Buffer>);
  try {
    await followEngine(docker, await docker.loadImage(body, { quiet: true }), "docker load", Code.BuildFailed);
    await packing;
  } catch (err) {
    await packing.catch(() => undefined);
    throw ShadowError.from(err, Code.BuildFailed);
  }
  const id = `sha256:${hex}`;
  const info = (await docker.getImage(id).inspect()) as { Id?: unknown };
  if (info.Id !== id) throw new ShadowError(Code.BuildFailed, `docker load did not make image ${id}`);
  return id;
}
