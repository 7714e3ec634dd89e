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
 *
 * Feeds come from the flags, or are added at run time (`add`, AdminService.AddFeed): an added
 * feed replaces one of the same name only once its source has been read and kept records, and is
 * kept in level (feeds/added-feeds.ts) so that a restart reads it again.
 */
import { EventEmitter } from "node:events";
import type { Readable } from "node:stream";
import type { Level } from "level";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { keys } from "../store/keys.js";
import { ChunkWriter, readChunk, RECORDS_PER_CHUNK } from "./chunk-store.js";
import { addedFeedPut, readAddedFeeds, type AddedFeed } from "./added-feeds.js";
import { isUrl, type FeedConfig, type FeedKind } from "./feed-config.js";
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
  /** Fixture records (`shadowlayer demo`'s), added with demo=true. */
  demo: boolean;
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

/** What a read must do besides making its generation current, in the same batch. */
interface Commit {
  ops: Array<{ type: "put"; key: string; value: Uint8Array }>;
  /** The feed the read replaces (its data leaves the index when the new one comes in). */
  replaces: FeedState | undefined;
}

/** One map per key of several feeds' maps; a later feed's entry wins. */
function mergeMaps<V>(parts: ReadonlyArray<Map<string, V>>): Map<string, V> {
  if (parts.length === 1 && parts[0] !== undefined) return parts[0];
  const out = new Map<string, V>();
  for (const p of parts) for (const [k, v] of p) out.set(k, v);
  return out;
}

export class FeedManager extends EventEmitter<FeedManagerEvents> {
  private readonly feeds = new Map<string, FeedState>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private started = false;
  private readonly running = new Map<string, Promise<void>>();
  /** KEV, EPSS and NVD data per feed: the index holds one map per kind, merged from these. */
  private readonly byFeed = new Map<string, { kind: Exclude<FeedKind, "osv">; maps: RecordMaps }>();

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    readonly index: VulnIndex,
    private readonly log: Logger,
  ) {
    super();
  }

  /**
   * Opens the feeds (those configured, then those added at run time before): removes what an
   * interrupted ingest or replacement left (every generation but the current one), then loads
   * each feed's current data from level into the index. A configured feed wins over an added one
   * of the same name, whose kept config is dropped: the flags say what this start reads.
   */
  static async open(db: Level<string, Uint8Array>, configs: readonly FeedConfig[], log: Logger, index = new VulnIndex()): Promise<FeedManager> {
    const m = new FeedManager(db, index, log);
    const all: AddedFeed[] = configs.map((config) => ({ config, demo: false }));
    for (const a of await readAddedFeeds(db, (key, why) => log.warn({ key, err: why }, "a kept feed config does not parse; skipped"))) {
      if (configs.some((c) => c.name === a.config.name)) {
        log.warn({ feed: a.config.name, source: a.config.source }, "a feed added at run time has the name of a configured one: the configured one is read");
        await db.del(keys.feedConfig(a.config.name));
        continue;
      }
      all.push(a);
    }
    for (const { config: c, demo } of all) {
      const meta = await m.storedMeta(c.name);
      m.feeds.set(c.name, { config: c, meta, demo });
      for (const range of keys.feedOrphans(c.name, meta.gen)) await db.clear(range);
      if (meta.gen > 0) await m.loadStored(c, meta.gen);
    }
    return m;
  }

  private async storedMeta(name: string): Promise<Meta> {
    const raw = await this.db.get(keys.feedMeta(name));
    return raw === undefined ? emptyMeta() : { ...emptyMeta(), ...(JSON.parse(dec.decode(raw)) as Partial<Meta>) };
  }

  /** Checks every feed now, then on its schedule. */
  start(): void {
    this.started = true;
    for (const f of this.feeds.values()) {
      void this.refreshOne(f.config.name);
      this.schedule(f.config);
    }
  }

  private schedule(c: FeedConfig): void {
    clearInterval(this.timers.get(c.name));
    const every = c.refreshMs ?? (isUrl(c.source) ? 6 * 3_600_000 : 60_000);
    const t = setInterval(() => void this.refreshOne(c.name), every);
    t.unref();
    this.timers.set(c.name, t);
  }

  stop(): void {
    this.started = false;
    for (const t of this.timers.values()) clearInterval(t);
    this.timers.clear();
  }

  /**
   * Adds a feed at run time, or replaces the one of the same name (AdminService.AddFeed). Its
   * source is read at once; only a read that keeps records replaces anything, and it is taken
   * whatever the old feed held (a new source is not a shrink of the old one). A source that
   * cannot be read, or yields nothing usable, changes nothing: FailedPrecondition says why.
   */
  async add(a: AddedFeed): Promise<FeedState> {
    const { name } = a.config;
    // One change of a feed at a time: a refresh or add in progress finishes first.
    for (let r = this.running.get(name); r !== undefined; r = this.running.get(name)) await r.catch(() => undefined);
    const p = this.replace(a);
    this.running.set(
      name,
      p.then(
        () => undefined,
        () => undefined,
      ).finally(() => this.running.delete(name)),
    );
    return p;
  }

  private async replace(a: AddedFeed): Promise<FeedState> {
    const { name } = a.config;
    const old = this.feeds.get(name);
    const stored = old?.meta ?? (await this.storedMeta(name));
    // A name not in use may still have data in level (a feed configured on an earlier start): it goes.
    if (old === undefined) for (const range of keys.feedOrphans(name, 0)) await this.db.clear(range);
    const lastGen = Math.max(stored.gen, stored.lastGen);
    const candidate: FeedState = {
      config: a.config,
      demo: a.demo,
      meta: { ...emptyMeta(), gen: old?.meta.gen ?? 0, lastGen, records: old?.meta.records ?? 0 },
    };
    const taken = await this.ingest(candidate, { force: true, acceptShrink: true }, { ops: [addedFeedPut(a)], replaces: old });
    if (!taken) {
      // Nothing replaced: the old status goes back (with the generation id the read used); a new
      // name leaves nothing (its generations are cleared before any add of it).
      if (old !== undefined) await this.saveMeta(name, { ...old.meta, lastGen: candidate.meta.lastGen });
      else await this.db.del(keys.feedMeta(name));
      throw new ShadowError(Code.FailedPrecondition, `feed ${name} (${a.config.kind} ${a.config.source}) was not added: ${candidate.meta.error}`);
    }
    if (this.started) this.schedule(a.config);
    this.log.info({ feed: name, kind: a.config.kind, source: a.config.source, demo: a.demo, replaced: old !== undefined }, "feed added");
    return candidate;
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

  private async doRefresh(name: string, opts: RefreshOptions): Promise<void> {
    const f = this.feeds.get(name);
    if (f !== undefined) await this.ingest(f, opts);
  }

  /**
   * Reads `f`'s source into a new generation and makes it current when the read may replace the
   * current data; `f.meta` says how it went either way. With `commit` (an add), `f` is not yet in
   * the feeds: it takes its name's place in the same step as its data becomes current.
   * Resolves to whether the source's data is in effect.
   */
  private async ingest(f: FeedState, { force = false, acceptShrink = false }: RefreshOptions, commit?: Commit): Promise<boolean> {
    const { config } = f;
    const { name } = config;
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
      return false;
    }
    if (opened === "unchanged") {
      Object.assign(meta, { state: "ok", error: "", lastSuccess: new Date().toISOString() });
      f.meta = meta;
      await this.saveMeta(name, meta);
      return true;
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
        return false;
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
      await this.db.batch([{ type: "put", key: keys.feedMeta(name), value: enc.encode(JSON.stringify(meta)) }, ...(commit?.ops ?? [])]);
      if (old > 0) await this.db.clear(keys.feedGeneration(name, old));
      if (commit !== undefined) {
        if (commit.replaces !== undefined && commit.replaces.config.kind !== config.kind) this.uninstall(commit.replaces.config);
        this.feeds.set(name, f);
      }
      this.install(config, maps);
      this.log.info({ feed: name, accepted, rejected, reasons, dropped, ms: Date.now() - started }, "feed loaded");
      this.emit("changed", name);
      return true;
    } catch (err) {
      opened.stream.destroy();
      await this.db.clear(keys.feedGeneration(name, gen)).catch(() => undefined);
      meta.state = "error";
      meta.error = `${err instanceof Error ? err.message : String(err)} (after ${accepted} records; the previous data is kept)`;
      f.meta = meta;
      await this.saveMeta(name, meta);
      this.log.warn({ feed: name, err: meta.error }, "feed could not be read; keeping the last good data");
      return false;
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
    if (c.kind === "osv") this.index.replaceOsvFeed(c.name, m.osv);
    else {
      this.byFeed.set(c.name, { kind: c.kind, maps: m });
      this.installKind(c.kind);
    }
  }

  /** Takes a replaced feed's data out of the index. */
  private uninstall(c: FeedConfig): void {
    if (c.kind === "osv") this.index.replaceOsvFeed(c.name, new Map());
    else if (this.byFeed.delete(c.name)) this.installKind(c.kind);
  }

  /** One kind's data in the index: every feed of that kind merged (a demo KEV beside the real one). */
  private installKind(kind: Exclude<FeedKind, "osv">): void {
    const of = [...this.byFeed.values()].filter((f) => f.kind === kind).map((f) => f.maps);
    switch (kind) {
      case "kev":
        this.index.setKev(mergeMaps(of.map((m) => m.kev)));
        break;
      case "epss":
        this.index.setEpss(mergeMaps(of.map((m) => m.epss)));
        break;
      case "nvd":
        this.index.setNvd(mergeMaps(of.map((m) => m.nvd)));
        break;
    }
  }
}
