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

/** Which windows or detections a listing holds. */
export interface TelemetryFilter {
  node?: string;
  containerId?: string;
}

/** Whether a stored window or detection is about the filter's container (decoded only when one is named). */
function matches(kind: "windows" | "detections", v: Uint8Array, filter: TelemetryFilter): boolean {
  if (filter.containerId === undefined) return true;
  const id = kind === "windows" ? fromBinary(StoredWindowSchema, v).window?.containerId : fromBinary(DetectionSchema, v).containerId;
  return id === filter.containerId;
}

export interface TelemetryStoreOptions {
  /** Windows kept per node (default 200,000). */
  maxWindowsPerNode?: number;
  /** Detections kept per node (default 100,000). */
  maxDetectionsPerNode?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

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
    for await (const [k, v] of db.iterator(keys.windowRange)) {
      const w = fromBinary(StoredWindowSchema, v).window;
      s.count(keys.nodeOfTelemetry(k)).windows++;
      if (w !== undefined) s.latest.set(w.containerId, w);
    }
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
        ops.push({ type: "put", key: keys.window(node, item.spoolId, item.spoolSeq, index), value: toBinary(StoredWindowSchema, stored) });
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
    for await (const k of this.db.keys({ ...range, limit: drop })) doomed.push(k);
    await this.db.batch(doomed.map((key) => ({ type: "del" as const, key })));
    if (kind === "win") c.windows -= doomed.length;
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
      const containerId = item.$typeName === "shadowlayer.v1.StoredWindow" ? item.window?.containerId : item.containerId;
      if (filter.containerId !== undefined && containerId !== filter.containerId) continue;
      yield { key, item: item as K extends "windows" ? StoredWindow : Detection };
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
