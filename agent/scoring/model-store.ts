/**
 * The agent's model directory (`<state dir>/models/`): `image-<hex>.json` per image and
 * `generic.json` for the node's generic model. Every write is atomic (a temporary file renamed
 * over the old one), so a reader never sees half a model. A file replaced by anyone (the agent's
 * own training, a ModelUpdate, an operator) is hot-loaded: fs.watch tells at once, a periodic
 * check of mtime and size catches what watching misses (some filesystems, a missed event). A
 * corrupt file, one of another feature version or trained on too few windows is rejected with a
 * log line and a count; the model in use stays.
 */
import { EventEmitter } from "node:events";
import { watch, type FSWatcher } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { errnoCode } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { parseArtifact } from "../../models/artifact.js";
import { MAX_ARTIFACT_BYTES, type ModelManifest } from "../../models/types.js";

/** Where a model came from: trained here, deployed (ModelUpdate, or a file placed while running), or found in the directory at start. */
export type ModelOrigin = "trained" | "deployed" | "stored";

export interface LoadedModel {
  /** "generic" or the image id ("sha256:<64 hex>"). */
  key: string;
  manifest: ModelManifest;
  /** The artifact's JSON text, as the workers take it. */
  artifact: string;
  origin: ModelOrigin;
  loadedAt: Date;
}

export interface ModelRejection {
  key: string;
  /** ModelError's reason, or "scope" (the model is for another image) / "unreadable". */
  reason: string;
  message: string;
}

export interface ModelStoreEvents {
  loaded: [LoadedModel];
  unloaded: [string];
  rejected: [ModelRejection];
}

export interface ModelStoreOptions {
  /** The directory; without one models live in memory only (no hot reload). */
  dir?: string;
  log: Logger;
  /** Fewest training windows a model may have been trained on (default MIN_TRAINING_WINDOWS). */
  minWindows?: number;
  /** The fallback check's period (default 5 s). */
  pollMs?: number;
}

export const GENERIC_KEY = "generic";
/** Models loaded at once (each holds its artifact's text, tens of KiB); a node runs far fewer images. */
export const MAX_MODELS = 1024;
const IMAGE_ID = /^sha256:([0-9a-f]{64})$/;
const FILE_NAME = /^(?:image-([0-9a-f]{64})|generic)\.json$/;

/** The file a model's key is stored in; undefined for a key that is not an image id or "generic". */
export function modelFileName(key: string): string | undefined {
  if (key === GENERIC_KEY) return "generic.json";
  const m = IMAGE_ID.exec(key);
  return m === null ? undefined : `image-${m[1]}.json`;
}

function keyOfFile(name: string): string | undefined {
  const m = FILE_NAME.exec(name);
  if (m === null) return undefined;
  return m[1] === undefined ? GENERIC_KEY : `sha256:${m[1]}`;
}

/** A model that was not loaded, with why. */
export class ModelRejected extends Error {
  constructor(readonly rejection: ModelRejection) {
    super(rejection.message);
  }
}

export class ModelStore extends EventEmitter<ModelStoreEvents> {
  private readonly models = new Map<string, LoadedModel>();
  /** mtime:size of each file as last read (also of files rejected, so they are not read again until changed). */
  private readonly seen = new Map<string, string>();
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private watcher: FSWatcher | undefined;
  private poller: NodeJS.Timeout | undefined;
  private rejectedCount = 0;
  private latestRejection = "";
  /** Reads of one file in a row (hot reload, poll), so two never interleave. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: ModelStoreOptions) {
    super();
  }

  get dir(): string | undefined {
    return this.o.dir;
  }

  get rejected(): number {
    return this.rejectedCount;
  }

  get lastRejection(): string {
    return this.latestRejection;
  }

  get(key: string): LoadedModel | undefined {
    return this.models.get(key);
  }

  all(): LoadedModel[] {
    return [...this.models.values()];
  }

  /** Creates the directory, loads what it holds, and starts following it. */
  async start(): Promise<void> {
    const dir = this.o.dir;
    if (dir === undefined) return;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await this.rescan("stored");
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (typeof name === "string" && keyOfFile(name) !== undefined) this.soon(name);
      });
      this.watcher.on("error", (err) => this.o.log.warn({ dir, err: String(err) }, "cannot watch the model directory; checking it periodically"));
    } catch (err) {
      this.o.log.warn({ dir, err: String(err) }, "cannot watch the model directory; checking it periodically");
    }
    this.poller = setInterval(() => void this.serial(() => this.rescan("deployed")), this.o.pollMs ?? 5000);
    this.poller.unref();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.poller) clearInterval(this.poller);
    for (const t of this.pending.values()) clearTimeout(t);
    this.pending.clear();
    await this.chain.catch(() => undefined);
  }

  /**
   * Validates an artifact for `key` (and its version, when given), writes it to the directory
   * (atomically) and loads it. Throws
   * ModelRejected (and counts it) when it is not valid; the model in use then stays.
   */
  install(data: string | Uint8Array, key: string, origin: ModelOrigin, version?: string): Promise<LoadedModel> {
    return this.serial(async () => {
      const text = typeof data === "string" ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("utf8");
      const m = this.validate(text, key, origin);
      if (version !== undefined && m.manifest.version !== version) {
        this.reject({ key, reason: "version", message: `the artifact is version ${m.manifest.version.slice(0, 80)}, the update says ${version.slice(0, 80)}` });
      }
      const name = modelFileName(key);
      if (this.o.dir !== undefined && name !== undefined) {
        const path = join(this.o.dir, name);
        await atomicWrite(path, text);
        const st = await stat(path);
        this.seen.set(name, `${st.mtimeMs}:${st.size}`);
      }
      this.use(m);
      return m;
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** A watch event: read the file once the writer is done (events come in bursts). */
  private soon(name: string): void {
    clearTimeout(this.pending.get(name));
    const t = setTimeout(() => {
      this.pending.delete(name);
      void this.serial(() => this.check(name, "deployed"));
    }, 50);
    t.unref();
    this.pending.set(name, t);
  }

  private async rescan(origin: ModelOrigin): Promise<void> {
    const dir = this.o.dir;
    if (dir === undefined) return;
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => keyOfFile(n) !== undefined);
    } catch (err) {
      this.o.log.warn({ dir, err: String(err) }, "cannot list the model directory");
      return;
    }
    for (const n of names) await this.check(n, origin);
    for (const n of [...this.seen.keys()]) if (!names.includes(n)) await this.check(n, origin);
  }

  /** Reads one file if it changed since it was last read; a removed file unloads its model. Never throws. */
  private async check(name: string, origin: ModelOrigin): Promise<void> {
    const key = keyOfFile(name);
    const dir = this.o.dir;
    if (key === undefined || dir === undefined) return;
    try {
      await this.read(join(dir, name), name, key, origin);
    } catch (err) {
      if (!(err instanceof ModelRejected)) this.o.log.warn({ model: key, file: name, err: String(err) }, "cannot load a model file");
    }
  }

  private async read(path: string, name: string, key: string, origin: ModelOrigin): Promise<void> {
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
      this.seen.delete(name);
      if (this.models.delete(key)) {
        this.o.log.info({ model: key, file: name }, "model file removed; model unloaded");
        this.emit("unloaded", key);
      }
      return;
    }
    const sig = `${st.mtimeMs}:${st.size}`;
    if (this.seen.get(name) === sig) return;
    this.seen.set(name, sig);
    if (!st.isFile()) this.reject({ key, reason: "unreadable", message: `${name} is not a regular file` });
    if (st.size > MAX_ARTIFACT_BYTES) this.reject({ key, reason: "too-large", message: `${name} is ${st.size} bytes, more than ${MAX_ARTIFACT_BYTES}` });
    let text: string;
    try {
      const fh = await open(path, "r");
      try {
        text = await fh.readFile({ encoding: "utf8" });
      } finally {
        await fh.close();
      }
    } catch (err) {
      this.reject({ key, reason: "unreadable", message: `cannot read ${name}: ${String(err)}` });
    }
    const m = this.validate(text, key, origin);
    // Our own write seen again by the watcher, or a file touched without a new model.
    if (this.models.get(key)?.manifest.version === m.manifest.version) return;
    this.use(m);
  }

  /** Parses and checks an artifact for `key`; a failure is counted and logged, then thrown as ModelRejected. */
  private validate(text: string, key: string, origin: ModelOrigin): LoadedModel {
    if (modelFileName(key) === undefined) this.reject({ key: key.slice(0, 80), reason: "invalid", message: `not an image id (sha256:<64 hex>) nor "generic": ${JSON.stringify(key.slice(0, 80))}` });
    let manifest: ModelManifest;
    try {
      manifest = parseArtifact(text, this.o.minWindows !== undefined ? { minWindows: this.o.minWindows } : {}).manifest;
    } catch (err) {
      const reason = typeof err === "object" && err !== null && "reason" in err ? String((err as { reason: unknown }).reason) : "corrupt";
      this.reject({ key, reason, message: err instanceof Error ? err.message : String(err) });
    }
    const scopeKey = manifest.scope.kind === "generic" ? GENERIC_KEY : manifest.scope.imageId;
    if (scopeKey !== key) this.reject({ key, reason: "scope", message: `the model is for ${scopeKey.slice(0, 80)}, not ${key}` });
    if (!this.models.has(key) && this.models.size >= MAX_MODELS) this.reject({ key, reason: "too-many", message: `${MAX_MODELS} models are loaded already` });
    return { key, manifest, artifact: text, origin, loadedAt: new Date() };
  }

  private reject(r: ModelRejection): never {
    this.rejectedCount++;
    this.latestRejection = `${new Date().toISOString()} ${r.key}: ${r.reason}: ${r.message}`.slice(0, 500);
    const inUse = this.models.get(r.key)?.manifest.version;
    this.o.log.warn({ model: r.key, reason: r.reason, err: r.message, inUse: inUse ?? (r.key === GENERIC_KEY ? "none" : "generic model") }, "anomaly model rejected");
    this.emit("rejected", r);
    throw new ModelRejected(r);
  }

  private use(m: LoadedModel): void {
    const old = this.models.get(m.key);
    this.models.set(m.key, m);
    this.o.log.info(
      { model: m.key, version: m.manifest.version, previous: old?.manifest.version, origin: m.origin, trainingWindows: m.manifest.trainingWindows, backend: m.manifest.backend },
      "anomaly model loaded",
    );
    this.emit("loaded", m);
  }
}

/** Writes `text` to `path` through a temporary file in the same directory, synced, then renamed over it. */
async function atomicWrite(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now().toString(36)}.tmp`;
  try {
    const fh = await open(tmp, "w", 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
