/**
 * A watch stream (WatchGraphs, WatchTelemetry, WatchScores) that cannot grow without bound when
 * its client stops reading. grpc-js queues whatever is written to a stream until the connection
 * takes it; 200 streams whose clients never read took an aggregator from 0.8 to 3.1 GB and
 * stalled every other call. Here each stream counts the bytes written to it and not yet taken
 * (grpc-js calls a write's callback once the connection took the message):
 *
 * - a live event that would take the stream past its bound is dropped, and so is every one after
 *   it, until the client has read what is queued;
 * - then the stream sends a RESYNC marker and a fresh snapshot (then SNAPSHOT_DONE), from which
 *   the client rebuilds what it missed;
 * - a snapshot is paced: each item waits until the stream is below half its bound and grpc-js
 *   asks for more (write()'s return value and 'drain'), so a large snapshot to a slow reader
 *   waits instead of queueing; each item is made when it is sent, so it is never older than a
 *   live event written before it.
 *
 * A stream whose client never reads again thus holds at most its bound (and one message).
 */
import type * as grpc from "@grpc/grpc-js";
import type { AggregatorMetrics } from "../metrics.js";

/** Bytes a watch stream may hold unread: several seconds of a busy cluster's events. */
export const WATCH_QUEUE_BYTES = 4 * 1024 * 1024;

export interface WatchSpec<E> {
  /** The stream's name in metrics: graphs, telemetry, scores. */
  kind: string;
  metrics: AggregatorMetrics;
  /** Encoded bytes of an event. */
  size: (e: E) => number;
  /** Starts live events; returns what stops them. */
  subscribe: (send: (e: E) => void) => () => void;
  /** The snapshot's items, each made (current) when it is sent; undefined skips one that is gone. */
  snapshot: () => Iterable<() => E | undefined>;
  snapshotDone: () => E;
  resync: () => E;
  maxQueuedBytes?: number;
}

/** What a watch of keyed items follows (the graph store, the score engine). */
export interface ChangeSource<T> {
  all(): T[];
  get(containerId: string): T | undefined;
  on(event: "upsert", listener: (t: T) => void): unknown;
  on(event: "delete", listener: (containerId: string, node?: string) => void): unknown;
  off(event: "upsert", listener: (t: T) => void): unknown;
  off(event: "delete", listener: (containerId: string, node?: string) => void): unknown;
}

/**
 * The live events and the snapshot of a watch of `source`'s items on the wanted nodes: each
 * change as `upsert` or `remove` makes it (a delete that names no node goes to every stream).
 */
export function changesOf<T extends { containerId: string; node: string }, E>(
  source: ChangeSource<T>,
  wanted: (node: string) => boolean,
  upsert: (t: T) => E,
  remove: (containerId: string) => E,
): Pick<WatchSpec<E>, "subscribe" | "snapshot"> {
  return {
    subscribe: (send) => {
      const onUpsert = (t: T) => {
        if (wanted(t.node)) send(upsert(t));
      };
      const onDelete = (id: string, node?: string) => {
        if (node === undefined || wanted(node)) send(remove(id));
      };
      source.on("upsert", onUpsert);
      source.on("delete", onDelete);
      return () => {
        source.off("upsert", onUpsert);
        source.off("delete", onDelete);
      };
    },
    snapshot: () =>
      source
        .all()
        .filter((t) => wanted(t.node))
        .map((t) => () => {
          const now = source.get(t.containerId);
          return now === undefined ? undefined : upsert(now);
        }),
  };
}

/** Runs one watch stream until its client goes away. */
export function runBoundedWatch<E>(call: grpc.ServerWritableStream<unknown, E>, spec: WatchSpec<E>): Promise<void> {
  return new BoundedWatch(call, spec).run();
}

class BoundedWatch<E> {
  private readonly max: number;
  /** Bytes written and not yet taken by the connection. */
  private queued = 0;
  /** write() returned false: grpc-js wants 'drain' before more. */
  private full = false;
  /** Live events were dropped since the last snapshot began. */
  private dropped = false;
  private pumping = false;
  private closed = false;
  private readonly waiters: Array<() => void> = [];
  private unsubscribe: () => void = () => undefined;

  constructor(
    private readonly call: grpc.ServerWritableStream<unknown, E>,
    private readonly spec: WatchSpec<E>,
  ) {
    this.max = spec.maxQueuedBytes ?? WATCH_QUEUE_BYTES;
  }

  async run(): Promise<void> {
    const m = this.spec.metrics;
    const stop = () => {
      if (this.closed) return;
      this.closed = true;
      this.unsubscribe();
      m.watchers.dec();
      // Callbacks of writes the connection never took do not come once the call is over.
      m.watchQueuedBytes.dec(this.queued);
      this.queued = 0;
      this.wake();
    };
    this.call.once("cancelled", stop);
    this.call.once("close", stop);
    this.call.on("drain", () => {
      this.full = false;
      this.wake();
    });
    m.watchers.inc();
    // Subscribe before the snapshot so nothing falls between the two.
    this.unsubscribe = this.spec.subscribe((e) => this.live(e));
    await this.pump(false);
  }

  private live(e: E): void {
    if (this.closed) return;
    const n = this.spec.size(e);
    if (this.dropped || (this.queued > 0 && this.queued + n > this.max)) {
      this.spec.metrics.watchDropped.inc({ stream: this.spec.kind });
      this.dropped = true;
      if (!this.pumping) void this.pump(true);
      return;
    }
    this.write(e, n);
  }

  private write(e: E, n: number): void {
    this.queued += n;
    this.spec.metrics.watchQueuedBytes.inc(n);
    const more = this.call.write(e, () => {
      if (this.closed) return;
      this.queued -= n;
      this.spec.metrics.watchQueuedBytes.dec(n);
      this.wake();
    });
    if (!more) this.full = true;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once the stream is below half its bound and grpc-js takes more (or the call is over). */
  private async room(): Promise<void> {
    while (!this.closed && (this.full || this.queued > this.max / 2)) await new Promise<void>((r) => this.waiters.push(r));
  }

  /** Sends a snapshot (after a RESYNC marker when `resync`), again while events were dropped meanwhile. */
  private async pump(resync: boolean): Promise<void> {
    this.pumping = true;
    try {
      do {
        if (resync) {
          await this.room();
          if (this.closed) return;
          this.dropped = false;
          this.spec.metrics.watchResyncs.inc({ stream: this.spec.kind });
          this.send(this.spec.resync());
        }
        for (const make of this.spec.snapshot()) {
          await this.room();
          if (this.closed) return;
          const e = make();
          if (e !== undefined) this.send(e);
        }
        this.send(this.spec.snapshotDone());
        resync = true;
      } while (this.dropped && !this.closed);
    } finally {
      this.pumping = false;
    }
  }

  private send(e: E): void {
    if (!this.closed) this.write(e, this.spec.size(e));
  }
}
