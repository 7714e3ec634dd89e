/**
 * The re-scan every strategy's result gets: the image's package inventory read with the agent's
 * own code (agent/inventory: database search, overlay views, attribution), so a shadow is judged
 * by the same rules as the image it replaces.
 *
 * On this host's engine (builder.localRoot) the layers' own directories are read in place. On a
 * remote builder the image is saved and, from each layer tar, only what the inventory reads is
 * unpacked into a directory per layer: package databases, os-release, and whiteouts (kept as
 * AUFS-style `.wh.` files, which the overlay model reads like overlay2's). Limits there: a
 * database that is a symlink in its layer is not unpacked (read in place it would be reported
 * as not followed), and neither are hard links to a database.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, symlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import * as tar from "tar-stream";
import { Code, ShadowError } from "../../common/errors.js";
import { ImageLayerResolver } from "../../agent/layers/image-layers.js";
import { inventoryMessage } from "../../agent/inventory/inventory-message.js";
import { inventoryOf, type InventoryLayer, type InventoryOptions } from "../../agent/inventory/layer-inventory.js";
import type { ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { safeArchiveName, saveImage } from "./image-archive.js";
import type { Builder, SavedLayer } from "./types.js";

/** What of a layer tar the inventory can read (database-search.ts's places, and os-release). */
const WANTED = [
  /^var\/lib\/dpkg\/status$/,
  /^var\/lib\/dpkg\/status\.d\/[^/]+$/,
  /^lib\/apk\/db\/installed$/,
  /(^|\/)node_modules\/(.+\/)?package\.json$/,
  /\.dist-info\/METADATA$/,
  /\.egg-info\/PKG-INFO$/,
  /\.egg-info$/,
  /^(etc|usr\/lib)\/os-release$/,
];
const WHITEOUT = /(^|\/)\.wh\.[^/]+$/;
/** One database file (a big dpkg status is a few MiB). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const MAX_TOTAL_BYTES = 512 * 1024 * 1024;

export interface RescanOptions {
  signal?: AbortSignal;
  budget?: InventoryOptions["budget"];
}

/** The inventory of `imageId` on `builder`; `workDir` is scratch space (a remote builder's layers). */
export async function rescanImage(builder: Builder, imageId: string, workDir: string, opts: RescanOptions = {}): Promise<ImageInventory> {
  const options: InventoryOptions = { ...(opts.signal !== undefined ? { signal: opts.signal } : {}), ...(opts.budget !== undefined ? { budget: opts.budget } : {}) };
  let layers: InventoryLayer[];
  if (builder.localRoot !== undefined) {
    const image = await new ImageLayerResolver(builder.docker, builder.localRoot).resolve(imageId);
    layers = image.layers.map((l) => ({ diffId: l.diffId, dir: l.dir }));
  } else {
    const saved = await saveImage(builder.docker, imageId, join(workDir, "rescan-save"));
    layers = [];
    let budget = MAX_TOTAL_BYTES;
    for (const [i, l] of saved.layers.entries()) {
      const dir = join(workDir, "rescan-layers", String(i));
      budget -= await unpackInventoryFiles(l, dir, budget);
      layers.push({ diffId: l.diffId, dir });
    }
  }
  const r = await inventoryOf(layers, options);
  return inventoryMessage(imageId, layers.map((l) => l.diffId), r);
}

/** Unpacks what the inventory reads from one layer tar into `dir`; returns the bytes written. */
async function unpackInventoryFiles(layer: SavedLayer, dir: string, budget: number): Promise<number> {
  await mkdir(dir, { recursive: true });
  const extract = tar.extract();
  const feed = pipeline(createReadStream(layer.path), extract as unknown as NodeJS.WritableStream);
  feed.catch(() => undefined);
  let written = 0;
  // Symlinks this unpacking made: nothing is ever written through one.
  const links: string[] = [];
  try {
    for await (const entry of extract) {
      const name = safeArchiveName(entry.header.name);
      if (links.some((l) => name.startsWith(`${l}/`))) {
        entry.resume();
        continue;
      }
      const file = entry.header.type === "file" || entry.header.type === "contiguous-file";
      const out = join(dir, name);
      if (file && WHITEOUT.test(name)) {
        await mkdir(dirname(out), { recursive: true });
        await pipeline(entry as AsyncIterable<Buffer>, createWriteStream(out));
      } else if (file && WANTED.some((re) => re.test(name))) {
        const size = entry.header.size ?? 0;
        if (size > MAX_FILE_BYTES || written + size > budget) throw new ShadowError(Code.InvalidArgument, `layer ${layer.diffId}: ${name} is ${size} bytes (limit ${Math.min(MAX_FILE_BYTES, budget - written)})`);
        written += size;
        await mkdir(dirname(out), { recursive: true });
        await pipeline(entry as AsyncIterable<Buffer>, createWriteStream(out));
      } else {
        if (entry.header.type === "symlink" && /^(etc|usr\/lib)\/os-release$/.test(name) && typeof entry.header.linkname === "string") {
          // Read back with the image's own resolution (inside the layers), never followed here.
          await mkdir(dirname(out), { recursive: true });
          await symlink(entry.header.linkname, out).catch(() => undefined);
          links.push(name);
        }
        entry.resume();
      }
    }
    await feed;
  } catch (err) {
    extract.destroy();
    throw ShadowError.from(err, Code.BuildFailed);
  }
  return written;
}
