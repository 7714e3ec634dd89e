/**
 * Several layer tars (bottom first) squashed into one, as the engine would apply them in order:
 * a later entry replaces an earlier one at its path (a directory over a directory keeps what is
 * below it, anything else replaces the whole subtree), `.wh.<name>` removes `<name>` and all
 * below it, `.wh..wh..opq` in a directory removes what earlier layers had in it. Whiteouts and
 * opaque markers stay in the output, since the layers below the squashed ones still hold what
 * they hide; a directory re-created after a whiteout is made opaque for the same reason.
 *
 * Two passes over the inputs: the first decides which entry of which layer wins each path (only
 * headers are kept in memory), the second streams the winners' bytes into the output in layer
 * order (so a hard link's target, from an earlier or the same layer, precedes it). Header fields
 * are kept as the input had them, PAX records (xattrs, long names) included.
 *
 * `marker` adds a PAX record to the first entry: the squashed layer's bytes then differ from any
 * layer made before (its diffID is new, and so is the directory the engine unpacks it into).
 */
import { createReadStream, createWriteStream } from "node:fs";
import { posix } from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as tar from "tar-stream";
import { Code, ShadowError } from "../../common/errors.js";
import { safeArchiveName } from "./image-archive.js";
import { digestTap } from "./digest-tap.js";
import { copyIntoEntry } from "./tar-copy.js";

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";

export interface SquashResult {
  path: string;
  diffId: string;
  size: number;
  entries: number;
}

interface Winner {
  layer: number;
  pos: number;
  dir: boolean;
}

type Header = tar.Header & { pax?: Record<string, string> | null };

/** Each entry of a layer tar, in order, with its normalised name. */
async function eachEntry(path: string, fn: (name: string, header: Header, body: AsyncIterable<Buffer> & { resume(): void }) => Promise<void>): Promise<void> {
  const extract = tar.extract();
  const feed = pipeline(createReadStream(path), extract as unknown as NodeJS.WritableStream);
  feed.catch(() => undefined);
  try {
    for await (const entry of extract) {
      const name = safeArchiveName(entry.header.name);
      await fn(name, entry.header as Header, entry as unknown as AsyncIterable<Buffer> & { resume(): void });
    }
    await feed;
  } catch (err) {
    extract.destroy();
    throw ShadowError.from(err, Code.BuildFailed);
  }
}

/** The winners of every path after applying the layers in order, and the opaque markers to add. */
async function plan(layers: readonly string[]): Promise<{ winners: Map<string, Winner>; synthetic: string[] }> {
  const winners = new Map<string, Winner>();
  const synthetic = new Set<string>();
  const dropBelow = (p: string, before: number): void => {
    const prefix = `${p}/`;
    for (const [k, w] of winners) if (k.startsWith(prefix) && w.layer < before) winners.delete(k);
    for (const k of synthetic) if (k.startsWith(prefix)) synthetic.delete(k);
  };
  for (const [layer, path] of layers.entries()) {
    let pos = 0;
    await eachEntry(path, async (name, header, body) => {
      body.resume();
      const at = pos++;
      const base = posix.basename(name);
      const parent = posix.dirname(name);
      const dir = header.type === "directory";
      if (base === OPAQUE_MARKER) {
        if (parent !== ".") dropBelow(parent, layer);
        else for (const [k, w] of winners) if (w.layer < layer) winners.delete(k);
        winners.set(name, { layer, pos: at, dir: false });
      } else if (base.startsWith(WHITEOUT_PREFIX)) {
        const target = parent === "." ? base.slice(WHITEOUT_PREFIX.length) : `${parent}/${base.slice(WHITEOUT_PREFIX.length)}`;
        winners.delete(target);
        dropBelow(target, layer + 1);
        winners.set(name, { layer, pos: at, dir: false });
      } else {
        const was = winners.get(name);
        const whiteout = parent === "." ? `${WHITEOUT_PREFIX}${base}` : `${parent}/${WHITEOUT_PREFIX}${base}`;
        const hidden = winners.delete(whiteout);
        if (was === undefined || !was.dir || !dir) dropBelow(name, layer + 1);
        // Re-created after a whiteout: what the layers below hold there must stay hidden.
        if (hidden && dir) synthetic.add(`${name}/${OPAQUE_MARKER}`);
        winners.set(name, { layer, pos: at, dir });
      }
    });
  }
  return { winners, synthetic: [...synthetic] };
}

/** Squashes `layers` (tar paths, bottom first) into the tar `out`. */
export async function squashLayers(layers: readonly string[], out: string, opts: { marker?: string } = {}): Promise<SquashResult> {
  if (layers.length === 0) throw new ShadowError(Code.Internal, "nothing to squash");
  const { winners, synthetic } = await plan(layers);
  const pack = tar.pack();
  const d = digestTap();
  const written = pipeline(pack as unknown as AsyncIterable<Buffer>, d.tap, createWriteStream(out));
  written.catch(() => undefined);
  let entries = 0;
  try {
    for (const [layer, path] of layers.entries()) {
      let pos = 0;
      await eachEntry(path, async (name, header, body) => {
        const at = pos++;
        const w = winners.get(name);
        if (w === undefined || w.layer !== layer || w.pos !== at) {
          body.resume();
          return;
        }
        const h: Header = { ...header, name: header.type === "directory" ? `${name}/` : name };
        if (entries === 0 && opts.marker !== undefined) h.pax = { ...(header.pax ?? {}), "SHADOWLAYER.restored": opts.marker };
        entries++;
        await copyIntoEntry(pack.entry(h) as unknown as Writable, body);
      });
    }
    for (const name of synthetic) {
      pack.entry({ name, mode: 0o644, mtime: new Date(0) }, Buffer.alloc(0));
      entries++;
    }
    pack.finalize();
    await written;
  } catch (err) {
    pack.destroy();
    throw ShadowError.from(err, Code.BuildFailed);
  }
  return { path: out, diffId: d.digest(), size: d.size(), entries };
}
