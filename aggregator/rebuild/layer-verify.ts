/**
 * Checks an image's layers on this host's disk against their diffIDs, as `docker save` would
 * rebuild them but without the engine: for each layer, its layerdb entry
 * (`image/overlay2/layerdb/sha256/<chainID>/{diff,cache-id,tar-split.json.gz}`) gives the tar's
 * headers and padding (tar-split's raw segments) and the files' names and sizes; the contents are
 * read from the layer's own directory (`overlay2/<cache-id>/diff`). The tar reassembled from them
 * is hashed: a layer whose directory was changed after it was unpacked (by hand, by a process
 * that escaped, by a bad disk) no longer hashes to its diffID. Each file's CRC-64 is compared
 * with the one tar-split recorded, to name the files that changed.
 *
 * Files are read without following symlinks (a component that is a symlink, or a leaf that is
 * not a regular file, counts as changed): a tampered directory cannot send the reader elsewhere.
 */
import { createHash } from "node:crypto";
import { closeSync, constants, createReadStream, createWriteStream, fstatSync, openSync, type WriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createGunzip } from "node:zlib";
import { Code, ShadowError } from "../../common/errors.js";
import { chainIds } from "../../agent/layers/chain-id.js";
import { resolveInRoot } from "../../agent/overlay/resolve-in-root.js";
import { Crc64Iso } from "./crc64-iso.js";

export interface ChangedFile {
  /** The path inside the layer (as the tar names it, with a leading slash). */
  path: string;
  /** content (checksum differs), missing, not-a-file (a symlink or another kind now), unsafe-name. */
  reason: "content" | "missing" | "not-a-file" | "unsafe-name";
}

export interface LayerCheck {
  index: number;
  diffId: string;
  chainId: string;
  cacheId: string;
  /** The layer's directory (overlay2/<cache-id>/diff). */
  dir: string;
  /** sha256 of the reassembled tar. */
  actual: string;
  ok: boolean;
  /** The files whose content differs from what the layer held (empty when ok). */
  changed: ChangedFile[];
  /** The reassembled tar, when `tarDir` was given. */
  tarPath?: string;
  size: number;
}

export interface VerifyOptions {
  /** Storage driver (default overlay2, the only one with this layout). */
  driver?: string;
  /** Write each reassembled tar here (`<index>.tar`): the verified layers, ready to load. */
  tarDir?: string;
  signal?: AbortSignal;
  /** Changed files named per layer, at most (a rewritten layer would name thousands). */
  maxChanged?: number;
}

interface TarSplitEntry {
  type: number;
  name?: string;
  name_raw?: string;
  size?: number;
  payload?: string | null;
}

/** A file of the layer opened for reading, refusing symlinks anywhere on its path. */
function openInLayer(dir: string, rel: string): number | ChangedFile["reason"] {
  const at = resolveInRoot(dir, rel);
  if (at === undefined || !at.exists) return "missing";
  if (at.path !== `/${rel}`) return "not-a-file";
  let fd: number;
  try {
    fd = openSync(join(dir, rel), constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return "not-a-file";
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    return "not-a-file";
  }
  return fd;
}

/** A tar entry name as a path inside the layer: relative, no `..`; undefined if it is neither. */
function layerPath(name: string): string | undefined {
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.length === 0 || parts.some((p) => p === ".." || p.includes("\0"))) return undefined;
  return parts.join("/");
}

async function write(out: WriteStream | undefined, chunk: Buffer): Promise<void> {
  if (out !== undefined && !out.write(chunk)) await new Promise<void>((r) => out.once("drain", () => r()));
}

/** One layer: reassembled, hashed, its files checked. */
async function verifyLayer(root: string, driver: string, index: number, diffId: string, chainId: string, opts: VerifyOptions): Promise<LayerCheck> {
  const db = join(root, "image", driver, "layerdb", "sha256", chainId.replace(/^sha256:/, ""));
  let cacheId: string;
  let recorded: string;
  try {
    cacheId = (await readFile(join(db, "cache-id"), "utf8")).trim();
    recorded = (await readFile(join(db, "diff"), "utf8")).trim();
  } catch (err) {
    throw new ShadowError(Code.NotFound, `layer ${index} (${diffId}) has no layerdb entry on the builder (${chainId})`, { cause: err });
  }
  if (!/^[0-9a-f]{64}$/.test(cacheId)) throw new ShadowError(Code.FailedPrecondition, `layer ${index} (${diffId}): its layerdb cache-id is not a directory id`);
  const dir = join(root, driver, cacheId, "diff");
  const hash = createHash("sha256");
  const out = opts.tarDir !== undefined ? createWriteStream(join(opts.tarDir, `${index}.tar`)) : undefined;
  const changed: ChangedFile[] = [];
  const maxChanged = opts.maxChanged ?? 100;
  let size = 0;
  const emit = async (chunk: Buffer): Promise<void> => {
    hash.update(chunk);
    size += chunk.length;
    await write(out, chunk);
  };
  const lines = createInterface({ input: createReadStream(join(db, "tar-split.json.gz")).pipe(createGunzip()), crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      if (opts.signal?.aborted) throw new ShadowError(Code.Cancelled, "layer verification cancelled");
      if (line === "") continue;
      const e = JSON.parse(line) as TarSplitEntry;
      if (e.type === 2) {
        if (typeof e.payload === "string") await emit(Buffer.from(e.payload, "base64"));
        continue;
      }
      if (e.type !== 1 || (e.size ?? 0) === 0) continue;
      const name = typeof e.name === "string" ? e.name : Buffer.from(e.name_raw ?? "", "base64").toString("latin1");
      const rel = layerPath(name);
      const note = (reason: ChangedFile["reason"]): void => {
        if (changed.length < maxChanged) changed.push({ path: `/${rel ?? name}`, reason });
      };
      if (rel === undefined) {
        note("unsafe-name");
        continue;
      }
      const fd = openInLayer(dir, rel);
      if (typeof fd !== "number") {
        note(fd);
        continue;
      }
      const crc = new Crc64Iso();
      for await (const chunk of createReadStream("", { fd, autoClose: true }) as AsyncIterable<Buffer>) {
        crc.update(chunk);
        await emit(chunk);
      }
      if (typeof e.payload === "string" && !crc.digest().equals(Buffer.from(e.payload, "base64"))) note("content");
    }
  } finally {
    if (out !== undefined) await new Promise<void>((resolve) => out.end(() => resolve()));
  }
  const actual = `sha256:${hash.digest("hex")}`;
  const ok = actual === diffId && recorded === diffId;
  return { index, diffId, chainId, cacheId, dir, actual, ok, changed: ok ? [] : changed, size, ...(out !== undefined ? { tarPath: join(opts.tarDir ?? "", `${index}.tar`) } : {}) };
}

/**
 * Every layer of an image (its diffIDs, bottom first) checked on the engine whose data root is
 * `root` (e.g. /var/lib/docker). Layers are independent on disk: all are checked, bottom first.
 */
export async function verifyLayers(root: string, diffIds: readonly string[], opts: VerifyOptions = {}): Promise<LayerCheck[]> {
  const driver = opts.driver ?? "overlay2";
  const chains = chainIds(diffIds);
  const out: LayerCheck[] = [];
  for (const [i, d] of diffIds.entries()) out.push(await verifyLayer(root, driver, i, d, chains[i] ?? d, opts));
  return out;
}
