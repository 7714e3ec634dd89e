/**
 * Feeds: each from a file path or an HTTPS URL, refreshed on a schedule (files: when their mtime
 * or size changes; URLs: with If-None-Match / If-Modified-Since), parsed as streams, validated
 * record by record, and stored in level under a new generation that replaces the old one only
 * when the whole source parsed and kept enough records (`MIN_KEPT_FRACTION`). A source that
 * fails (unreachable, not the format at all, all or most records rejected) keeps the last good
 * data; its status says so and how stale it is.
 *
 * Generations survive a crash at any point: each ingest writes under an id never used before
 * (reserved in the meta before the first chunk), the meta's one put makes it current, and every
 * other generation's chunks are removed when the feeds are opened.
 */
import { EventEmitter } from "node:events";
import type { Readable } from "node:stream";
import type { Level } from "level";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { keys } from "../store/keys.js";
import { ChunkWriter, readChunk, RECORDS_PER_CHUNK } from "./chunk-store.js";
import { isUrl, type FeedConfig } from "./feed-config.js";
import { openFeedSource, type OpenedSource, type SourceHint } from "./feed-source.js";
import type { FeedStream } from "./parse/types.js";
import { parseEpss } from "./parse/epss.js";
import { parseKev } from "./parse/kev.js";
import { parseNvd } from "./parse/nvd.js";
import { parseOsvRecord, parseOsvStream, readOsvSource, type OsvRecord } from "./parse/osv.js";
import { addToMaps, newMaps, recordCount, recordKey, type RecordMaps } from "./record-maps.js";
import { VulnIndex } from "../vulns/index.js";

interface Meta {
  /** The current generation (0: none). */
  gen: number;
  /** The highest generation id ever reserved: a new ingest takes the next one, so none is reused. */
  lastGen: number;
  etag: string;
  lastModified: string;
  fileStamp: string;
  lastAttempt: string;
  lastSuccess: string;
  lastChange: string;
  state: "ok" | "error" | "never";
  error: string;
  /** The counts of the last source read to its end (a refused read's, to show why it was refused). */
  accepted: number;
  rejected: number;
  reasons: Record<string, number>;
  /** Parts dropped from kept records, by reason (absent in metas written before it was kept). */
  dropped?: Record<string, number>;
  /** The first rejections with their specifics. */
  samples: string[];
  /** Records in effect: the current generation's. */
  records: number;
}

const emptyMeta = (): Meta => ({
  gen: 0,
  lastGen: 0,
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

/**
 * A read that keeps fewer than this fraction of the current generation's records is refused and
 * the current data stays (unless the caller accepts the shrink). Real feeds move by a few percent
 * between refreshes (KEV only grows; EPSS scores every published CVE daily; OSV exports add and
 * withdraw a few advisories), while a truncated or swapped download, a format change the parsers
 * reject row by row, or a decompression bomb leaves none or a fraction: half sits far from both.
 * A read that keeps no record at all is always refused.
 */
export const MIN_KEPT_FRACTION = 0.5;

export interface RefreshOptions {
  /** Read the sources even when they say they did not change. */
  force?: boolean;
  /** Take a read that keeps fewer than `MIN_KEPT_FRACTION` of the current records (never one of none). */
  acceptShrink?: boolean;
}

/** What one read of a source gave. */
interface ReadCounts {
  records: number;
  accepted: number;
  rejected: number;
  reasons: Record<string, number>;
}

/** Why a read must not replace the current data, or undefined when it may. */
function refusal({ records, accepted, rejected, reasons }: ReadCounts, current: Meta, acceptShrink: boolean): string | undefined {
  const why = Object.entries(reasons)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
  const read = `${accepted} accepted, ${rejected} rejected${why === "" ? "" : ` (${why})`}`;
  const kept = current.gen > 0 ? `; the previous ${current.records} records are kept` : "";
  if (records === 0) return `refused: the source yielded no usable record, ${read}${kept}`;
  if (!acceptShrink && current.gen > 0 && records < current.records * MIN_KEPT_FRACTION) {
    return `refused: ${records} records, fewer than ${MIN_KEPT_FRACTION * 100}% of the current ${current.records}, ${read}${kept}`;
  }
  return undefined;
}

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

  /**
   * Opens the feeds: removes what an interrupted ingest or replacement left (every generation but
   * the current one), then loads each feed's current data from level into the index.
   */
  static async open(db: Level<string, Uint8Array>, configs: readonly FeedConfig[], log: Logger, index = new VulnIndex()): Promise<FeedManager> {
    const m = new FeedManager(db, index, log);
    for (const c of configs) {
      const raw = await db.get(keys.feedMeta(c.name));
      const meta = raw === undefined ? emptyMeta() : { ...emptyMeta(), ...(JSON.parse(dec.decode(raw)) as Partial<Meta>) };
      m.feeds.set(c.name, { config: c, meta });
      for (const range of keys.feedOrphans(c.name, meta.gen)) await db.clear(range);
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
  async refresh(name?: string, opts: RefreshOptions = {}): Promise<void> {
    if (name !== undefined && name !== "" && !this.feeds.has(name)) {
      throw new ShadowError(Code.NotFound, `no feed named ${name} (configured: ${[...this.feeds.keys()].join(", ") || "none"})`);
    }
    const names = name === undefined || name === "" ? [...this.feeds.keys()] : [name];
    await Promise.all(names.map((n) => this.refreshOne(n, opts)));
  }

  private refreshOne(name: string, opts: RefreshOptions = {}): Promise<void> {
    const running = this.running.get(name);
    if (running !== undefined) return running;
    const p = this.doRefresh(name, opts).finally(() => this.running.delete(name));
    this.running.set(name, p);
    return p;
  }

  private async saveMeta(name: string, meta: Meta): Promise<void> {
    await this.db.put(keys.feedMeta(name), enc.encode(JSON.stringify(meta)));
  }

  private async doRefresh(name: string, { force = false, acceptShrink = false }: RefreshOptions): Promise<void> {
    const f = this.feeds.get(name);
    if (f === undefined) return;
    const { config } = f;
    const meta = { ...f.meta, lastAttempt: new Date().toISOString() };
    let opened: OpenedSource | "unchanged";
    try {
      opened = await openFeedSource(config.source, meta, force);
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
    // A fresh id, reserved before the first chunk: chunks a crash leaves under it are never read
    // as part of a later generation (they are removed at the next open).
    const gen = Math.max(meta.gen, meta.lastGen) + 1;
    const reasons: Record<string, number> = {};
    const samples: string[] = [];
    let accepted = 0;
    let rejected = 0;
    const started = Date.now();
    try {
      meta.lastGen = gen;
      f.meta = meta;
      await this.saveMeta(name, meta);
      const items = this.items(config, opened.stream, opened.hint);
      const maps = newMaps();
      // Records are stored in chunks (one level value per RECORDS_PER_CHUNK records).
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
        accepted++;
        if (config.kind === "osv" && (item.record as OsvRecord).withdrawn) continue; // withdrawn: never matches, not stored
        addToMaps(config.kind, maps, item.record);
        if (item.raw !== undefined) chunk.addRaw(item.raw);
        else chunk.addRecord(item.record);
        if (chunk.count >= RECORDS_PER_CHUNK) flushChunk();
        if (ops.length >= 8) {
          await this.db.batch(ops);
          ops = [];
        }
      }
      flushChunk();
      if (ops.length > 0) await this.db.batch(ops);
      const dropped = { ...items.stats.dropped };
      const records = recordCount(config.kind, maps);
      const refused = refusal({ records, accepted, rejected, reasons }, meta, acceptShrink);
      if (refused !== undefined) {
        await this.db.clear(keys.feedGeneration(name, gen));
        Object.assign(meta, { state: "error", error: refused, accepted, rejected, reasons, dropped, samples });
        f.meta = meta;
        await this.saveMeta(name, meta);
        this.log.warn({ feed: name, accepted, rejected, reasons, records, current: meta.records }, "feed read refused; keeping the last good data");
        return;
      }
      // Everything parsed: the new generation takes over (one put of the meta), the old one goes.
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
        dropped,
        samples,
        records,
      });
      f.meta = meta;
      await this.saveMeta(name, meta);
      if (old > 0) await this.db.clear(keys.feedGeneration(name, old));
      this.install(config, maps);
      this.log.info({ feed: name, accepted, rejected, reasons, dropped, ms: Date.now() - started }, "feed loaded");
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

  private items(c: FeedConfig, stream: Readable, hint: SourceHint): FeedStream<unknown, object> {
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

  private install(c: FeedConfig, m: RecordMaps): void {
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
