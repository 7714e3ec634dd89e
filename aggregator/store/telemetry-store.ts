/**
 * Telemetry from agents, stored exactly once: each item carries its agent spool's id and seq, and
 * an item at or below the last seq stored for that node's spool is a re-send after a reconnect,
 * acked and dropped. Sequences are per (node, spool id), so no node can end another's. Windows
 * and detections are kept per node in arrival order, bounded (oldest pruned).
 * The latest window per container is also kept in memory for `top` and WatchTelemetry.
 */
import { EventEmitter } from "node:events";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Level } from "level";
import { StoredWindowSchema, type StoredWindow } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { DetectionSchema, type Detection, type TelemetryItem, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { keys } from "./keys.js";
import { migrateSpoolSeqs } from "./spool-seq-migration.js";

export interface TelemetryStoreEvents {
  window: [WindowSummary];
  detection: [Detection];
}

/** Whether the sending node may write about this container (false: the item's part is not stored). */
export type ContainerScope = (containerId: string, kind: "window" | "detection") => boolean;

/**
 * Which windows or detections a listing holds. A container is named by id, or (for one whose graph
 * is gone, so that its id is not known any more) by a prefix of its id or by its name.
 */
export interface TelemetryFilter {
  node?: string;
  containerId?: string;
  containerPrefix?: string;
  containerName?: string;
}

/** Whether the filter names a container at all (items are decoded only then). */
const namesContainer = (f: TelemetryFilter) => f.containerId !== undefined || f.containerPrefix !== undefined || f.containerName !== undefined;

/** Whether a container (id and name) is the one the filter names. */
export function containerMatches(f: TelemetryFilter, id: string | undefined, name: string | undefined): boolean {
  if (f.containerId !== undefined && id !== f.containerId) return false;
  if (f.containerPrefix !== undefined && !(id ?? "").startsWith(f.containerPrefix)) return false;
  if (f.containerName !== undefined && name !== f.containerName) return false;
  return true;
}

/** Whether a stored window or detection is about the filter's container (decoded only when one is named). */
function matches(kind: "windows" | "detections", v: Uint8Array, filter: TelemetryFilter): boolean {
  if (!namesContainer(filter)) return true;
  if (kind === "windows") {
    const w = fromBinary(StoredWindowSchema, v).window;
    return containerMatches(filter, w?.containerId, w?.containerName);
  }
  const d = fromBinary(DetectionSchema, v);
  return containerMatches(filter, d.containerId, d.containerName);
}

/** A window's end in milliseconds (its start when it has no end; 0 when neither). */
function endMsOf(w: WindowSummary | undefined): number {
  const t = w?.end ?? w?.start;
  return t === undefined ? 0 : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

/** Windows read per round trip when a time range is listed through the index. */
const RANGE_BATCH = 256;

export interface TelemetryStoreOptions {
  /** Windows kept per node (default 200,000). */
  maxWindowsPerNode?: number;
  /** Detections kept per node (default 100,000). */
  maxDetectionsPerNode?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const EMPTY = new Uint8Array(0);

export class TelemetryStore extends EventEmitter<TelemetryStoreEvents> {
  /** Last seq stored, by `keys.nodeSpoolSeq(node, spoolId)`. */
  private readonly lastSeq = new Map<string, bigint>();
  private readonly latest = new Map<string, WindowSummary>();
  private readonly counts = new Map<string, { windows: number; detections: number }>();
  private readonly maxWindows: number;
  private readonly maxDetections: number;

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    o: TelemetryStoreOptions,
  ) {
    super();
    this.setMaxListeners(0);
    this.maxWindows = o.maxWindowsPerNode ?? 200_000;
    this.maxDetections = o.maxDetectionsPerNode ?? 100_000;
  }

  static async open(db: Level<string, Uint8Array>, o: TelemetryStoreOptions = {}): Promise<TelemetryStore> {
    const s = new TelemetryStore(db, o);
    await migrateSpoolSeqs(db);
    for await (const [k, v] of db.iterator(keys.nodeSpoolSeqRange)) s.lastSeq.set(k, BigInt(dec.decode(v)));
    // A store from before the time index gets it now, in the pass that counts the windows anyway.
    const indexed = (await db.get(keys.windowEndIndexed)) !== undefined;
    let index: Array<{ type: "put"; key: string; value: Uint8Array }> = [];
    for await (const [k, v] of db.iterator(keys.windowRange)) {
      const w = fromBinary(StoredWindowSchema, v).window;
      s.count(keys.nodeOfTelemetry(k)).windows++;
      if (w !== undefined) s.latest.set(w.containerId, w);
      if (!indexed) {
        index.push({ type: "put", key: keys.windowEnd(endMsOf(w), k), value: EMPTY });
        if (index.length >= 10_000) {
          await db.batch(index);
          index = [];
        }
      }
    }
    if (!indexed) await db.batch([...index, { type: "put", key: keys.windowEndIndexed, value: enc.encode("1") }]);
    for await (const k of db.keys(keys.detectionRange)) s.count(keys.nodeOfTelemetry(k)).detections++;
    return s;
  }

  private count(node: string): { windows: number; detections: number } {
    let c = this.counts.get(node);
    if (c === undefined) this.counts.set(node, (c = { windows: 0, detections: 0 }));
    return c;
  }

  stats(node: string): { windows: number; detections: number } {
    return this.counts.get(node) ?? { windows: 0, detections: 0 };
  }

  /**
   * Stores one item from `node`'s stream; false when it was a repeat. Windows and detections that
   * `scope` refuses are left out, the item still counts as delivered (its seq is kept).
   */
  async put(node: string, item: TelemetryItem, scope: ContainerScope = () => true): Promise<boolean> {
    if (item.spoolId === "" || item.spoolSeq === 0n) throw new ShadowError(Code.InvalidArgument, "telemetry item without spool id or seq");
    const seqKey = keys.nodeSpoolSeq(node, item.spoolId);
    const last = this.lastSeq.get(seqKey) ?? 0n;
    if (item.spoolSeq <= last) return false;
    const body = item.body;
    const seqOp = { type: "put" as const, key: seqKey, value: enc.encode(item.spoolSeq.toString()) };
    if (body.case === "windows") {
      const ws = body.value.windows;
      if (ws.length > 100_000) throw new ShadowError(Code.InvalidArgument, `a batch of ${ws.length} windows is more than one agent can have`);
      const ops: Array<{ type: "put"; key: string; value: Uint8Array }> = [];
      for (const w of ws) {
        if (w.node !== node) throw new ShadowError(Code.PermissionDenied, `window for node ${JSON.stringify(w.node)} on the stream of node ${JSON.stringify(node)}`);
        if (!/^[0-9a-f]{64}$/.test(w.containerId)) throw new ShadowError(Code.InvalidArgument, "window without a valid container id");
      }
      const kept = ws.filter((w) => scope(w.containerId, "window"));
      kept.forEach((w, index) => {
        const stored = create(StoredWindowSchema, { spoolId: item.spoolId, spoolSeq: item.spoolSeq, window: w, index });
        const key = keys.window(node, item.spoolId, item.spoolSeq, index);
        ops.push({ type: "put", key, value: toBinary(StoredWindowSchema, stored) });
        ops.push({ type: "put", key: keys.windowEnd(endMsOf(w), key), value: EMPTY });
      });
      ops.push(seqOp);
      await this.db.batch(ops);
      this.lastSeq.set(seqKey, item.spoolSeq);
      const c = this.count(node);
      c.windows += kept.length;
      if (c.windows > this.maxWindows * 1.1) await this.prune(node, "win", this.maxWindows);
      for (const w of kept) {
        this.latest.set(w.containerId, w);
        this.emit("window", w);
      }
    } else if (body.case === "detection") {
      const d = body.value;
      if (d.node !== node) throw new ShadowError(Code.PermissionDenied, `detection for node ${JSON.stringify(d.node)} on the stream of node ${JSON.stringify(node)}`);
      if (!scope(d.containerId, "detection")) {
        await this.db.put(seqKey, seqOp.value);
        this.lastSeq.set(seqKey, item.spoolSeq);
        return true;
      }
      await this.db.batch([{ type: "put", key: keys.detection(node, item.spoolId, item.spoolSeq), value: toBinary(DetectionSchema, d) }, seqOp]);
      this.lastSeq.set(seqKey, item.spoolSeq);
      if (++this.count(node).detections > this.maxDetections * 1.1) await this.prune(node, "det", this.maxDetections);
      this.emit("detection", d);
    } else {
      throw new ShadowError(Code.InvalidArgument, "empty telemetry item");
    }
    return true;
  }

  private async prune(node: string, kind: "win" | "det", keep: number): Promise<void> {
    const c = this.count(node);
    const total = kind === "win" ? c.windows : c.detections;
    const drop = total - keep;
    if (drop <= 0) return;
    const range = kind === "win" ? keys.windowsOfNode(node) : keys.detectionsOfNode(node);
    const doomed: string[] = [];
    if (kind === "win") {
      // A window's time index entry goes with it.
      for await (const [k, v] of this.db.iterator({ ...range, limit: drop })) doomed.push(k, keys.windowEnd(endMsOf(fromBinary(StoredWindowSchema, v).window), k));
    } else {
      for await (const k of this.db.keys({ ...range, limit: drop })) doomed.push(k);
    }
    await this.db.batch(doomed.map((key) => ({ type: "del" as const, key })));
    if (kind === "win") c.windows -= doomed.length / 2;
    else c.detections -= doomed.length;
  }

  /** The latest window of each container. */
  latestWindows(): WindowSummary[] {
    return [...this.latest.values()];
  }

  latestWindow(containerId: string): WindowSummary | undefined {
    return this.latest.get(containerId);
  }

  forgetContainer(containerId: string): void {
    this.latest.delete(containerId);
  }

  /** Windows in arrival order (per node), the newest `limit` of those matching. */
  async windows(filter: { node?: string; containerId?: string }, limit: number): Promise<StoredWindow[]> {
    const range = filter.node ? keys.windowsOfNode(filter.node) : keys.windowRange;
    const out: StoredWindow[] = [];
    for await (const v of this.db.values({ ...range, reverse: true })) {
      const s = fromBinary(StoredWindowSchema, v);
      if (filter.containerId !== undefined && s.window?.containerId !== filter.containerId) continue;
      out.push(s);
      if (out.length >= limit) break;
    }
    return out.reverse();
  }

  /**
   * Where a listing of the newest `limit` matching windows (or detections) starts: the level key of
   * the oldest of them, undefined when none matches. Pages then read forward from it
   * (`entries`), so each page costs its own items, not the whole listing again.
   */
  async listingStart(kind: "windows" | "detections", filter: TelemetryFilter, limit: number): Promise<string | undefined> {
    let first: string | undefined;
    let n = 0;
    for await (const [k, v] of this.db.iterator({ ...this.range(kind, filter.node), reverse: true })) {
      if (!matches(kind, v, filter)) continue;
      first = k;
      if (++n >= limit) break;
    }
    return first;
  }

  /** Matching windows (or detections) with their level keys, in key order, from `from` (or after it). */
  async *entries<K extends "windows" | "detections">(kind: K, filter: TelemetryFilter, from: { gte: string } | { gt: string }): AsyncGenerator<{ key: string; item: K extends "windows" ? StoredWindow : Detection }> {
    const range = this.range(kind, filter.node);
    for await (const [key, v] of this.db.iterator({ ...from, lt: range.lt })) {
      if (key <= range.gt) continue;
      const item = kind === "windows" ? fromBinary(StoredWindowSchema, v) : fromBinary(DetectionSchema, v);
      const [id, name] = item.$typeName === "shadowlayer.v1.StoredWindow" ? [item.window?.containerId, item.window?.containerName] : [item.containerId, item.containerName];
      if (!containerMatches(filter, id, name)) continue;
      yield { key, item: item as K extends "windows" ? StoredWindow : Detection };
    }
  }

  /**
   * Windows that ended in [sinceMs, untilMs) and match `filter`, by end time (then node and
   * arrival), each with its time index key; from the start of the range or after `after` (a key
   * this gave). Reads the index, so a range costs its own windows whatever else is stored.
   */
  async *windowsEnded(filter: TelemetryFilter, sinceMs: number, untilMs: number, after?: string): AsyncGenerator<{ key: string; item: StoredWindow }> {
    const range = keys.windowsEndedIn(sinceMs, untilMs);
    const nodePrefix = filter.node === undefined ? undefined : `win!${filter.node}!`;
    let from: { gte: string } | { gt: string } = after !== undefined && after >= range.gte ? { gt: after } : { gte: range.gte };
    for (;;) {
      const batch: string[] = [];
      for await (const k of this.db.keys({ ...from, lt: range.lt, limit: RANGE_BATCH })) batch.push(k);
      if (batch.length === 0) return;
      from = { gt: batch[batch.length - 1] as string };
      const wanted = batch.filter((k) => nodePrefix === undefined || keys.windowOfEnd(k).startsWith(nodePrefix));
      const values = await this.db.getMany(wanted.map(keys.windowOfEnd));
      for (let i = 0; i < wanted.length; i++) {
        const v = values[i];
        // Pruned between the two reads: gone.
        if (v === undefined) continue;
        const item = fromBinary(StoredWindowSchema, v);
        if (!containerMatches(filter, item.window?.containerId, item.window?.containerName)) continue;
        yield { key: wanted[i] as string, item };
      }
      if (batch.length < RANGE_BATCH) return;
    }
  }

  private range(kind: "windows" | "detections", node: string | undefined): { gt: string; lt: string } {
    if (kind === "windows") return node ? keys.windowsOfNode(node) : keys.windowRange;
    return node ? keys.detectionsOfNode(node) : keys.detectionRange;
  }

  async detections(filter: { node?: string; containerId?: string }, limit: number): Promise<Detection[]> {
    const range = filter.node ? keys.detectionsOfNode(filter.node) : keys.detectionRange;
    const out: Detection[] = [];
    for await (const v of this.db.values({ ...range, reverse: true })) {
      const d = fromBinary(DetectionSchema, v);
      if (filter.containerId !== undefined && d.containerId !== filter.containerId) continue;
      out.push(d);
      if (out.length >= limit) break;
    }
    return out.reverse();
  }
}
