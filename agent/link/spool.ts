/**
 * The agent's telemetry spool: window summaries and detections wait here, in level, until the
 * aggregator acknowledges them, so an aggregator outage (or an agent restart) loses nothing up to
 * the bound. Items are numbered 1, 2, 3... within a spool (`seq`); the spool has a random id
 * chosen when it is new, so the aggregator can drop repeats by (spool id, seq) after a
 * reconnect re-sends what was in flight. When full, the oldest items are dropped and counted.
 * The spool lives in a sublevel of the agent's state database, which its owner opens and closes.
 */
import { randomUUID } from "node:crypto";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { TelemetryItemSchema, type TelemetryItem } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { StateSublevel } from "../state/state-sublevel.js";

export type SpoolBody = NonNullable<MessageInitShape<typeof TelemetryItemSchema>["body"]>;

const ITEM = "i!";

/**
 * The spool's keys, the same in the state sublevel as in the stand-alone database of earlier
 * versions (so carrying an old spool over copies keys as they are).
 */
export const spoolKeys = {
  id: "m!id",
  dropped: "m!dropped",
  /** How far an earlier version's spool has been carried over (state/legacy-layout.ts). */
  carried: "m!carried",
  item: (seq: bigint) => `${ITEM}${seq.toString(16).padStart(16, "0")}`,
  seqOf: (key: string) => BigInt(`0x${key.slice(ITEM.length)}`),
  items: { gt: ITEM, lt: `${ITEM}\xff` },
} as const;
const seqKey = spoolKeys.item;
const META_ID = spoolKeys.id;
const META_DROPPED = spoolKeys.dropped;

export interface SpoolOptions {
  /** Items kept at most (default 100,000: about 28 hours of 10 s windows for 30 containers). */
  maxItems?: number;
}

export class Spool {
  private next = 1n;
  private first = 1n;
  private chain: Promise<unknown> = Promise.resolve();
  private droppedCount = 0;
  private readonly max: number;
  private readonly waiters: Array<() => void> = [];
  /**
   * The newest unacknowledged items, kept decoded so the sender does not read back what it just
   * wrote (the usual case while the aggregator is up). Bounded; older items come from level.
   */
  private readonly tail = new Map<bigint, TelemetryItem>();
  private static readonly TAIL_MAX = 4096;

  private constructor(
    private readonly db: StateSublevel<Uint8Array>,
    readonly id: string,
    o: SpoolOptions,
  ) {
    this.max = Math.max(1, o.maxItems ?? 100_000);
  }

  /** Loads the spool kept in `db` (an open sublevel), choosing its id if it is new. */
  static async open(db: StateSublevel<Uint8Array>, o: SpoolOptions = {}): Promise<Spool> {
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    let id = await db.get(META_ID).then((v) => (v === undefined ? undefined : dec.decode(v)));
    if (id === undefined) {
      id = randomUUID();
      await db.put(META_ID, enc.encode(id));
    }
    const s = new Spool(db, id, o);
    const dropped = await db.get(META_DROPPED);
    s.droppedCount = dropped === undefined ? 0 : Number(dec.decode(dropped));
    for await (const k of db.keys({ ...spoolKeys.items, limit: 1 })) s.first = spoolKeys.seqOf(k);
    for await (const k of db.keys({ ...spoolKeys.items, reverse: true, limit: 1 })) s.next = spoolKeys.seqOf(k) + 1n;
    if (s.next < s.first) s.first = s.next;
    return s;
  }

  /** Items waiting for an acknowledgement. */
  get pending(): number {
    return Number(this.next - this.first);
  }

  get dropped(): number {
    return this.droppedCount;
  }

  /** The seq the next appended item gets. */
  get nextSeq(): bigint {
    return this.next;
  }

  /** Appends an item (in call order); drops the oldest beyond the bound. Resolves with its seq. */
  append(body: SpoolBody): Promise<bigint> {
    return this.serial(async () => {
      const seq = this.next;
      const item = create(TelemetryItemSchema, { spoolId: this.id, spoolSeq: seq, body });
      const ops: Array<{ type: "put"; key: string; value: Uint8Array } | { type: "del"; key: string }> = [
        { type: "put", key: seqKey(seq), value: toBinary(TelemetryItemSchema, item) },
      ];
      let drop = 0;
      while (this.pending + 1 - drop > this.max) {
        ops.push({ type: "del", key: seqKey(this.first + BigInt(drop)) });
        drop++;
      }
      if (drop > 0) ops.push({ type: "put", key: META_DROPPED, value: new TextEncoder().encode(String(this.droppedCount + drop)) });
      await this.db.batch(ops);
      this.next = seq + 1n;
      for (let i = 0; i < drop; i++) this.tail.delete(this.first + BigInt(i));
      this.first += BigInt(drop);
      this.tail.set(seq, item);
      if (this.tail.size > Spool.TAIL_MAX) this.tail.delete(this.tail.keys().next().value ?? 0n);
      this.droppedCount += drop;
      for (const w of this.waiters.splice(0)) w();
      return seq;
    });
  }

  /** Up to `limit` items with seq > `after`, in order. */
  async readAfter(after: bigint, limit: number): Promise<TelemetryItem[]> {
    const from = after + 1n > this.first ? after + 1n : this.first;
    const out: TelemetryItem[] = [];
    if (this.tail.has(from)) {
      for (let seq = from; seq < this.next && out.length < limit; seq++) {
        const item = this.tail.get(seq);
        if (item === undefined) break;
        out.push(item);
      }
      return out;
    }
    for await (const v of this.db.values({ gte: seqKey(from), lt: spoolKeys.items.lt, limit })) out.push(fromBinary(TelemetryItemSchema, v));
    return out;
  }

  /** Forgets every item up to and including `seq` (the aggregator has it). */
  ack(seq: bigint): Promise<void> {
    return this.serial(async () => {
      if (seq < this.first) return;
      const upTo = seq + 1n < this.next ? seq + 1n : this.next;
      await this.db.clear({ gte: seqKey(this.first), lt: seqKey(upTo) });
      for (let seq = this.first; seq < upTo; seq++) this.tail.delete(seq);
      this.first = upTo;
    });
  }

  /** Resolves when an item is appended (for the sender's loop). */
  waitAppend(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  /** Waits for pending writes; the database itself is closed by its owner. */
  async close(): Promise<void> {
    await this.chain.catch(() => undefined);
    for (const w of this.waiters.splice(0)) w();
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }
}
