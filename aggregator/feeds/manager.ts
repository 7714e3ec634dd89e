/**
 * Feeds: each from a file path or an HTTPS URL, refreshed on a schedule (files: when their mtime
 * or size changes; URLs: with If-None-Match / If-Modified-Since), parsed as streams, validated
 * record by record, and stored in level under a new generation that replaces the old one only
 * when the whole source parsed. A source that fails (unreachable, not the format at all) keeps
 * the last good data; its status says so and how stale it is.
 */
import { EventEmitter } from "node:events";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import type { Level } from "level";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { keys } from "../store/keys.js";
import type { FeedItem } from "./parse/types.js";
import { parseEpss, type EpssRecord } from "./parse/epss.js";
import { parseKev, type KevRecord } from "./parse/kev.js";
import { parseNvd, type NvdRecord } from "./parse/nvd.js";
import { parseOsvRecord, parseOsvStream, readOsvSource, type OsvRecord } from "./parse/osv.js";
import { osvRecordProblem, VulnIndex, type AdvisoryEntry, type EpssEntry, type KevEntry, type NvdEntry } from "../vulns/index.js";

export type FeedKind = "osv" | "kev" | "epss" | "nvd";
const KINDS: readonly FeedKind[] = ["osv", "kev", "epss", "nvd"];

export interface FeedConfig {
  name: string;
  kind: FeedKind;
  source: string;
  /** How often the source is checked (default: files 60 s, URLs 6 h). */
  refreshMs?: number;
  /** Past this age without a successful check, the feed is stale (default 24 h). */
  maxAgeMs?: number;
}

/** `kind=source` (e.g. `osv=/data/osv`, `kev=https://…`); names default to the kind (then kind-2…). */
export function parseFeedFlags(flags: readonly string[]): FeedConfig[] {
  const out: FeedConfig[] = [];
  for (const f of flags) {
    const eq = f.indexOf("=");
    const kind = f.slice(0, eq) as FeedKind;
    const source = f.slice(eq + 1);
    if (eq <= 0 || !KINDS.includes(kind) || source === "") {
      throw new ShadowError(Code.InvalidArgument, `--feed ${JSON.stringify(f)}: expected KIND=SOURCE with KIND one of ${KINDS.join(", ")} and SOURCE a path or https URL`);
    }
    checkSource(source);
    const n = out.filter((c) => c.kind === kind).length;
    out.push({ name: n === 0 ? kind : `${kind}-${n + 1}`, kind, source });
  }
  return out;
}

function isUrl(source: string): boolean {
  return /^[a-z]+:\/\//i.test(source);
}

/** https anywhere; plain http only to loopback (tests, a local mirror). */
function checkSource(source: string): void {
  if (!isUrl(source)) return;
  let u: URL;
  try {
    u = new URL(source);
  } catch {
    throw new ShadowError(Code.InvalidArgument, `feed source ${source} is not a valid URL`);
  }
  const loopback = u.hostname === "localhost" || u.hostname === "[::1]" || /^127\./.test(u.hostname);
  if (u.protocol === "https:" || (u.protocol === "http:" && loopback)) return;
  throw new ShadowError(Code.InvalidArgument, `feed source ${source}: only https:// URLs (or http:// to loopback) are accepted`);
}

interface Meta {
  gen: number;
  etag: string;
  lastModified: string;
  fileStamp: string;
  lastAttempt: string;
  lastSuccess: string;
  lastChange: string;
  state: "ok" | "error" | "never";
  error: string;
  accepted: number;
  rejected: number;
  reasons: Record<string, number>;
  /** The first rejections with their specifics. */
  samples: string[];
  records: number;
}

const emptyMeta = (): Meta => ({
  gen: 0,
  etag: "",
  lastModified: "",
  fileStamp: "",
  lastAttempt: "",
  lastSuccess: "",
  lastChange: "",
  state: "never",
  error: "",
  accepted: 0,
  rejected: 0,
  reasons: {},
  samples: [],
  records: 0,
});

export interface FeedState {
  config: FeedConfig;
  meta: Meta;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const CHUNK = 500;

/** The reason class of a rejection (the parsers give short classes; bounded here all the same). */
function reasonClass(reason: string): string {
  return reason.trim().slice(0, 60) || "invalid";
}

export interface FeedManagerEvents {
  /** A feed's data changed (the index has the new data). */
  changed: [string];
}

export class FeedManager extends EventEmitter<FeedManagerEvents> {
  private readonly feeds = new Map<string, FeedState>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Map<string, Promise<void>>();

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    readonly index: VulnIndex,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Opens the feeds: loads each one's last good data from level into the index. */
  static async open(db: Level<string, Uint8Array>, configs: readonly FeedConfig[], log: Logger, index = new VulnIndex()): Promise<FeedManager> {
    const m = new FeedManager(db, index, log);
    for (const c of configs) {
      const raw = await db.get(keys.feedMeta(c.name));
      const meta = raw === undefined ? emptyMeta() : { ...emptyMeta(), ...(JSON.parse(dec.decode(raw)) as Partial<Meta>) };
      m.feeds.set(c.name, { config: c, meta });
      if (meta.gen > 0) await m.loadStored(c, meta.gen);
    }
    return m;
  }

  /** Checks every feed now, then on its schedule. */
  start(): void {
    for (const f of this.feeds.values()) {
      void this.refreshOne(f.config.name);
      const every = f.config.refreshMs ?? (isUrl(f.config.source) ? 6 * 3_600_000 : 60_000);
      const t = setInterval(() => void this.refreshOne(f.config.name), every);
      t.unref();
      this.timers.push(t);
    }
  }

  stop(): void {
    for (const t of this.timers.splice(0)) clearInterval(t);
  }

  /** Waits for any refresh in progress. */
  async idle(): Promise<void> {
    await Promise.all([...this.running.values()]);
  }

  states(): FeedState[] {
    return [...this.feeds.values()];
  }

  /**
   * Checks one feed (by name) or all now; resolves when done (errors are in the status). Sources
   * that say they did not change (same file stamp, HTTP 304) are not read again unless `force`.
   */
  async refresh(name?: string, force = false): Promise<void> {
    if (name !== undefined && name !== "" && !this.feeds.has(name)) {
      throw new ShadowError(Code.NotFound, `no feed named ${name} (configured: ${[...this.feeds.keys()].join(", ") || "none"})`);
    }
    const names = name === undefined || name === "" ? [...this.feeds.keys()] : [name];
    await Promise.all(names.map((n) => this.refreshOne(n, force)));
  }

  private refreshOne(name: string, force = false): Promise<void> {
    const running = this.running.get(name);
    if (running !== undefined) return running;
    const p = this.doRefresh(name, force).finally(() => this.running.delete(name));
    this.running.set(name, p);
    return p;
  }

  private async saveMeta(name: string, meta: Meta): Promise<void> {
    await this.db.put(keys.feedMeta(name), enc.encode(JSON.stringify(meta)));
  }

  private async doRefresh(name: string, force: boolean): Promise<void> {
    const f = this.feeds.get(name);
    if (f === undefined) return;
    const { config } = f;
    const meta = { ...f.meta, lastAttempt: new Date().toISOString() };
    let opened: { stream: Readable; etag: string; lastModified: string; fileStamp: string; hint: "json" | "zip" | "dir" } | "unchanged";
    try {
      opened = await this.open(config, meta, force);
    } catch (err) {
      meta.state = "error";
      meta.error = err instanceof Error ? err.message : String(err);
      f.meta = meta;
      await this.saveMeta(name, meta);
      this.log.warn({ feed: name, source: config.source, err: meta.error }, "feed refresh failed; keeping the last good data");
      return;
    }
    if (opened === "unchanged") {
      Object.assign(meta, { state: "ok", error: "", lastSuccess: new Date().toISOString() });
      f.meta = meta;
      await this.saveMeta(name, meta);
      return;
    }
    const gen = meta.gen + 1;
    const reasons: Record<string, number> = {};
    const samples: string[] = [];
    let accepted = 0;
    let rejected = 0;
    const started = Date.now();
    try {
      const items = this.items(config, opened.stream, opened.hint);
      const maps = newMaps();
      // Records are stored in chunks (one level value per CHUNK records): a feed is only ever
      // read back whole, and one put per record was most of the ingest cost.
      const chunk = new ChunkWriter();
      let chunkNo = 0;
      let ops: Array<{ type: "put"; key: string; value: Uint8Array }> = [];
      const flushChunk = () => {
        if (chunk.count === 0) return;
        ops.push({ type: "put", key: keys.feedChunk(name, gen, chunkNo++), value: chunk.take() });
      };
      for await (const item of items) {
        if (!item.ok) {
          rejected++;
          const c = reasonClass(item.rejection.reason);
          reasons[c] = (reasons[c] ?? 0) + 1;
          const r = item.rejection;
          if (samples.length < 20) samples.push(`${r.id ?? r.at ?? "?"}: ${c}${r.detail !== undefined ? ` (${r.detail.slice(0, 200)})` : ""}`);
          continue;
        }
        if (recordKey(config.kind, item.record) === undefined) continue;
        if (config.kind === "osv") {
          // An advisory whose versions its ecosystem cannot order could match wrongly: refused.
          const problem = osvRecordProblem(item.record as OsvRecord);
          if (problem !== undefined) {
            rejected++;
            reasons["unparseable version"] = (reasons["unparseable version"] ?? 0) + 1;
            if (samples.length < 20) samples.push(`${(item.record as OsvRecord).id}: ${problem}`);
            continue;
          }
        }
        accepted++;
        if (config.kind === "osv" && (item.record as OsvRecord).withdrawn) continue; // withdrawn: never matches, not stored
        addToMaps(config.kind, maps, item.record);
        if (item.raw !== undefined) chunk.addRaw(item.raw);
        else chunk.addRecord(item.record);
        if (chunk.count >= CHUNK) flushChunk();
        if (ops.length >= 8) {
          await this.db.batch(ops);
          ops = [];
        }
      }
      flushChunk();
      if (ops.length > 0) await this.db.batch(ops);
      // Everything parsed: the new generation takes over, the old one goes.
      const old = meta.gen;
      Object.assign(meta, {
        gen,
        etag: opened.etag,
        lastModified: opened.lastModified,
        fileStamp: opened.fileStamp,
        state: "ok",
        error: "",
        lastSuccess: new Date().toISOString(),
        lastChange: new Date().toISOString(),
        accepted,
        rejected,
        reasons,
        samples,
        records: recordCount(config.kind, maps),
      });
      f.meta = meta;
      await this.saveMeta(name, meta);
      if (old > 0) await this.db.clear(keys.feedGeneration(name, old));
      this.install(config, maps);
      this.log.info({ feed: name, accepted, rejected, reasons, ms: Date.now() - started }, "feed loaded");
      this.emit("changed", name);
    } catch (err) {
      opened.stream.destroy();
      await this.db.clear(keys.feedGeneration(name, gen)).catch(() => undefined);
      meta.state = "error";
      meta.error = `${err instanceof Error ? err.message : String(err)} (after ${accepted} records; the previous data is kept)`;
      f.meta = meta;
      await this.saveMeta(name, meta);
      this.log.warn({ feed: name, err: meta.error }, "feed could not be read; keeping the last good data");
    }
  }

  private async open(c: FeedConfig, meta: Meta, force: boolean): Promise<{ stream: Readable; etag: string; lastModified: string; fileStamp: string; hint: "json" | "zip" | "dir" } | "unchanged"> {
    if (!isUrl(c.source)) {
      const st = await stat(c.source).catch((err: unknown) => {
        throw new ShadowError(Code.NotFound, `feed source ${c.source} cannot be read (${err instanceof Error ? err.message : String(err)})`);
      });
      const stamp = st.isDirectory() ? await dirStamp(c.source) : `${st.mtimeMs}:${st.size}:${st.ino}`;
      if (!force && stamp === meta.fileStamp && meta.gen > 0) return "unchanged";
      if (st.isDirectory()) return { stream: Readable.from([]), etag: "", lastModified: "", fileStamp: stamp, hint: "dir" };
      return { stream: createReadStream(c.source), etag: "", lastModified: "", fileStamp: stamp, hint: c.source.endsWith(".zip") ? "zip" : "json" };
    }
    const headers: Record<string, string> = {};
    if (meta.gen > 0 && !force) {
      if (meta.etag !== "") headers["if-none-match"] = meta.etag;
      if (meta.lastModified !== "") headers["if-modified-since"] = meta.lastModified;
    }
    const res = await fetch(c.source, { headers, redirect: "follow", signal: AbortSignal.timeout(60_000) }).catch((err: unknown) => {
      const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
      throw new ShadowError(Code.FailedPrecondition, `${c.source} did not answer (${err instanceof Error ? err.message : String(err)}${cause})`);
    });
    if (res.status === 304) return "unchanged";
    if (!res.ok || res.body === null) throw new ShadowError(Code.FailedPrecondition, `${c.source} answered HTTP ${res.status} ${res.statusText}`);
    const path = new URL(c.source).pathname;
    return {
      stream: Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>),
      etag: res.headers.get("etag") ?? "",
      lastModified: res.headers.get("last-modified") ?? "",
      fileStamp: "",
      hint: path.endsWith(".zip") ? "zip" : "json",
    };
  }

  private items(c: FeedConfig, stream: Readable, hint: "json" | "zip" | "dir"): AsyncIterable<FeedItem<unknown>> {
    switch (c.kind) {
      case "osv":
        if (!isUrl(c.source)) {
          // A directory of records, one record, or an all.zip on disk: the reader walks it itself.
          stream.destroy();
          return readOsvSource(c.source);
        }
        return parseOsvStream(stream, hint === "zip" ? "zip" : "json");
      case "kev":
        return parseKev(stream);
      case "epss":
        return parseEpss(stream);
      case "nvd":
        return parseNvd(stream);
    }
  }

  private async loadStored(c: FeedConfig, gen: number): Promise<void> {
    const maps = newMaps();
    for await (const v of this.db.values(keys.feedGeneration(c.name, gen))) {
      for (const { raw, text } of readChunk(v)) {
        const json: unknown = JSON.parse(text);
        if (!raw) addToMaps(c.kind, maps, json);
        else {
          // A record kept as its source text: normalised again, as when it was first read.
          const item = parseOsvRecord(json);
          if (item.ok) addToMaps(c.kind, maps, item.record);
        }
      }
    }
    this.install(c, maps);
  }

  private install(c: FeedConfig, m: Maps): void {
    switch (c.kind) {
      case "osv":
        this.index.replaceOsvFeed(c.name, m.osv);
        break;
      case "kev":
        this.index.setKev(m.kev);
        break;
      case "epss":
        this.index.setEpss(m.epss);
        break;
      case "nvd":
        this.index.setNvd(m.nvd);
        break;
    }
  }
}

/** A directory's change stamp: its files' count and newest mtime (a file edited in place counts). */
async function dirStamp(dir: string): Promise<string> {
  let count = 0;
  let newest = 0;
  let bytes = 0;
  const walk = async (d: string, depth: number): Promise<void> => {
    if (depth > 8) return;
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory()) await walk(p, depth + 1);
      else if (e.isFile()) {
        const st = await stat(p).catch(() => undefined);
        if (st === undefined) continue;
        count++;
        bytes += st.size;
        if (st.mtimeMs > newest) newest = st.mtimeMs;
      }
    }
  };
  await walk(dir, 0);
  return `dir:${count}:${bytes}:${newest}`;
}

/**
 * A chunk of records as one level value: frames of [1 byte kind][4 bytes length][UTF-8 JSON],
 * kind "R" for a record's source text (normalised again on load), "N" for a normalised record.
 */
class ChunkWriter {
  private parts: Uint8Array[] = [];
  private bytes = 0;
  count = 0;

  private frame(kind: number, data: Uint8Array): void {
    const head = new Uint8Array(5);
    head[0] = kind;
    new DataView(head.buffer).setUint32(1, data.length);
    this.parts.push(head, data);
    this.bytes += 5 + data.length;
    this.count++;
  }

  addRaw(data: Uint8Array): void {
    this.frame(0x52, data);
  }

  addRecord(r: unknown): void {
    this.frame(0x4e, enc.encode(JSON.stringify(r)));
  }

  take(): Uint8Array {
    const out = Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    this.count = 0;
    return out;
  }
}

function* readChunk(v: Uint8Array): Generator<{ raw: boolean; text: string }> {
  const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
  let off = 0;
  while (off + 5 <= v.length) {
    const kind = v[off];
    const len = view.getUint32(off + 1);
    const text = dec.decode(v.subarray(off + 5, off + 5 + len));
    off += 5 + len;
    yield { raw: kind === 0x52, text };
  }
}

interface Maps {
  osv: Map<string, AdvisoryEntry[]>;
  kev: Map<string, KevEntry>;
  epss: Map<string, EpssEntry>;
  nvd: Map<string, NvdEntry>;
}

function newMaps(): Maps {
  return { osv: new Map(), kev: new Map(), epss: new Map(), nvd: new Map() };
}

function recordKey(kind: FeedKind, r: unknown): string | undefined {
  const o = r as Record<string, unknown>;
  const k = kind === "osv" ? o["id"] : kind === "kev" ? o["cveID"] : o["cve"];
  return typeof k === "string" && k !== "" ? k : undefined;
}

function addToMaps(kind: FeedKind, m: Maps, r: unknown): void {
  switch (kind) {
    case "osv": {
      const rec = r as OsvRecord;
      m.osv.set(rec.id, VulnIndex.compile(rec));
      break;
    }
    case "kev": {
      const k = r as KevRecord;
      m.kev.set(k.cveID, { dateAdded: k.dateAdded, ransomware: k.knownRansomwareCampaignUse });
      break;
    }
    case "epss": {
      const e = r as EpssRecord;
      m.epss.set(e.cve, { epss: e.epss, percentile: e.percentile });
      break;
    }
    case "nvd": {
      const n = r as NvdRecord;
      // v3 first: scores stay on one scale wherever a v3 one exists (aggregator/vulns/SCORING.md).
      const c = n.cvss31 ?? n.cvss40;
      if (c !== undefined) m.nvd.set(n.cve, { vector: c.vector, baseScore: c.baseScore });
      break;
    }
  }
}

function recordCount(kind: FeedKind, m: Maps): number {
  return kind === "osv" ? m.osv.size : kind === "kev" ? m.kev.size : kind === "epss" ? m.epss.size : m.nvd.size;
}
