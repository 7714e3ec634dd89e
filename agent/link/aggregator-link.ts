/**
 * The agent's stream to the aggregator. It never blocks the agent: while the aggregator is down
 * the agent keeps building graphs, and on each (re)connect it sends Hello, its status, its full
 * current state and SyncComplete, so the aggregator catches up whatever it missed. Commands from
 * the aggregator go through the command journal and their results back on the stream.
 *
 * No message may end the stream by its size: each is capped (message-caps.ts), inventories go in
 * chunks (inventory-chunks.ts), and one that still does not fit is dropped and counted (a spooled
 * one is forgotten as if acked), so the link never reconnects to send the same message again.
 */
import { status as GrpcStatus, type Client, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import {
  AgentMessageSchema,
  AggregatorMessageSchema,
  AgentService,
  CommandStatus,
  HeartbeatSchema,
  type AggregatorMessage,
  type Command,
  type Hello,
  type Heartbeat,
} from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { LinkStatusSchema, type LinkStatus } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { SwitchoverRecordSource } from "../actions/switchover/record-source.js";
import { Backoff } from "../../common/backoff.js";
import type { TlsMaterial } from "../../common/certs.js";
import { channelCredentials, makeClient, methodPath } from "../../common/grpc.js";
import type { Logger } from "../../common/log.js";
import { unimplementedHandler } from "../actions/command-handler.js";
import { CommandJournal } from "../actions/command-journal.js";
import type { AgentMetrics } from "../metrics.js";
import { inventoryChunks } from "./inventory-chunks.js";
import { capMessage, MESSAGE_LIMIT_BYTES } from "./message-caps.js";
import type { Spool } from "./spool.js";

export interface AggregatorLinkOptions {
  address: string;
  tls: TlsMaterial | "insecure";
  hello: () => Hello;
  /** The full current state, sent after every (re)connect. */
  snapshot: () => LayerGraph[];
  log: Logger;
  metrics: AgentMetrics;
  /** Image inventories to send with the full state after each (re)connect. */
  inventories?: () => ImageInventory[];
  /** Telemetry waiting for delivery; sent in order after each sync, forgotten once acked. */
  spool?: Spool;
  /** Builds a heartbeat (agent status, node context); sent every `heartbeatMs` while connected. */
  heartbeat?: () => Promise<Omit<MessageInitShape<typeof HeartbeatSchema>, "$typeName">>;
  heartbeatMs?: number;
  /** Where commands are journaled and run; without one, a journal in memory answering UNIMPLEMENTED. */
  commands?: CommandJournal;
  /**
   * The switchover records the agent keeps: all of them after each full-state sync, then each
   * change at once. Not spooled: the resend after a reconnect covers what a disconnect lost.
   */
  switchovers?: SwitchoverRecordSource;
}

/** Telemetry items written but not yet acknowledged, at most. */
const MAX_INFLIGHT = 256;

type Body = NonNullable<MessageInitShape<typeof AgentMessageSchema>["body"]>;
type HeartbeatInit = Omit<MessageInitShape<typeof HeartbeatSchema>, "$typeName">;
/** The stream carries messages encoded once, by `send`, where their size is checked. */
type Stream = ClientDuplexStream<Uint8Array, AggregatorMessage>;

export class AggregatorLink {
  private client: Client | undefined;
  private call: Stream | undefined;
  /** The current stream has had the full state written: changes may follow it. */
  private live = false;
  /** The aggregator has acknowledged the full state. */
  private synced = false;
  private syncSeq = 0n;
  private seq = 0n;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private readonly backoff = new Backoff(250, 10_000);
  private attempts = 0;
  private downLogged = false;
  private readonly commands: CommandJournal;
  private readonly syncWaiters: Array<() => void> = [];
  /** Telemetry on the current stream: stream seq -> spool seq, oldest first. */
  private inflight: Array<{ streamSeq: bigint; spoolSeq: bigint }> = [];
  private sentThrough = 0n;
  private pumping = false;
  private pumpAgain = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** The last heartbeat built, re-sent at once after each Hello. */
  private lastHeartbeat: HeartbeatInit | undefined;
  private lastError = "";
  private lastErrorAt: Date | undefined;
  private droppedOversize = 0;
  private truncated = 0;

  constructor(private readonly o: AggregatorLinkOptions) {
    this.commands = o.commands ?? new CommandJournal(undefined, unimplementedHandler, { log: o.log });
  }

  start(): void {
    this.stopped = false;
    this.o.switchovers?.on("record", this.onRecord);
    this.client = makeClient(AgentService, this.o.address, channelCredentials(this.o.tls), {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
    });
    this.connect();
    if (this.o.heartbeat !== undefined) {
      this.heartbeatTimer = setInterval(() => void this.sendHeartbeat(), this.o.heartbeatMs ?? 10_000);
      this.heartbeatTimer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    this.o.switchovers?.off("record", this.onRecord);
    if (this.retry) clearTimeout(this.retry);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.call?.cancel();
    this.call = undefined;
    this.live = false;
    this.client?.close();
    this.client = undefined;
    this.setSynced(false);
  }

  /** True once the aggregator has acknowledged the full state on the current stream. */
  get connected(): boolean {
    return this.synced;
  }

  /** Resolves when the aggregator has acknowledged the full state on a stream. */
  waitSynced(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((r) => this.syncWaiters.push(r));
  }

  upsert(graph: LayerGraph): void {
    if (this.live) this.send({ case: "graphUpsert", value: { graph } }, "upsert");
  }

  delete(containerId: string): void {
    if (this.live) this.send({ case: "graphDelete", value: { containerId } }, "delete");
  }

  private readonly onRecord = (r: SwitchoverRecord): void => {
    if (this.live) this.send({ case: "switchover", value: r }, "switchover");
  };

  inventory(inv: ImageInventory): void {
    if (this.live) this.sendInventory(inv);
  }

  /** How the link has fared, for the heartbeat (so `shadowlayer agents` shows it). */
  status(): LinkStatus {
    return create(LinkStatusSchema, {
      reconnects: BigInt(Math.max(0, this.attempts - 1)),
      lastError: this.lastError,
      ...(this.lastErrorAt !== undefined ? { lastErrorAt: timestampFromDate(this.lastErrorAt) } : {}),
      droppedOversize: BigInt(this.droppedOversize),
      truncated: BigInt(this.truncated),
    });
  }

  /** New telemetry is in the spool: send it if the stream is up. */
  telemetryAppended(): void {
    void this.pump();
  }

  private async sendHeartbeat(): Promise<void> {
    if (!this.live || this.o.heartbeat === undefined) return;
    try {
      this.lastHeartbeat = await this.o.heartbeat();
    } catch (err) {
      this.o.log.debug({ err: String(err) }, "heartbeat not built");
      return;
    }
    if (this.live) this.sendStatus();
  }

  /**
   * The last heartbeat with the spool and link as they are now. Sent right after Hello too, so
   * the aggregator learns what waits and why the last stream ended even if the sync then fails.
   */
  private sendStatus(): void {
    const hb = this.lastHeartbeat;
    const spool = this.o.spool;
    const telemetry = spool === undefined ? hb?.telemetry : { ...hb?.telemetry, spoolPending: BigInt(spool.pending), spoolDropped: BigInt(spool.dropped) };
    const body = { ...hb, at: timestampNow(), link: this.status(), ...(telemetry !== undefined ? { telemetry } : {}) };
    this.send({ case: "heartbeat", value: body as Heartbeat }, "heartbeat");
  }

  private sendInventory(inv: ImageInventory): void {
    for (const chunk of inventoryChunks(inv)) this.send({ case: "inventory", value: chunk }, "inventory");
  }

  /** Writes spooled telemetry after what this stream already carries, keeping a bounded window in flight. */
  private async pump(): Promise<void> {
    const spool = this.o.spool;
    if (spool === undefined) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        const call = this.call;
        while (call !== undefined && this.call === call && this.live) {
          const room = MAX_INFLIGHT - this.inflight.length;
          if (room <= 0) break;
          const items = await spool.readAfter(this.sentThrough, room);
          if (this.call !== call || !this.live || items.length === 0) break;
          for (const item of items) {
            if (this.send({ case: "telemetry", value: item }, item.body.case ?? "telemetry")) this.inflight.push({ streamSeq: this.seq, spoolSeq: item.spoolSeq });
            // Not sent on a stream still up: it was too large, and is dropped for good.
            else if (this.call === call) this.forget(spool, item.spoolSeq);
            else break;
            this.sentThrough = item.spoolSeq;
          }
        }
      } while (this.pumpAgain);
    } catch (err) {
      this.o.log.warn({ err: String(err) }, "cannot read the telemetry spool");
    } finally {
      this.pumping = false;
    }
  }

  /**
   * A spooled item that cannot be sent is done with: acked along with the item before it, or at
   * once when nothing is in flight, so it is never read and tried again.
   */
  private forget(spool: Spool, spoolSeq: bigint): void {
    const last = this.inflight[this.inflight.length - 1];
    if (last !== undefined) {
      this.inflight.push({ streamSeq: last.streamSeq, spoolSeq });
      return;
    }
    void spool.ack(spoolSeq).then(
      () => this.o.metrics.spoolPending.set(spool.pending),
      (err: unknown) => this.o.log.warn({ err: String(err) }, "cannot trim the telemetry spool"),
    );
  }

  private onAck(seq: bigint): void {
    let done: bigint | undefined;
    while (this.inflight.length > 0 && (this.inflight[0]?.streamSeq ?? 0n) <= seq) done = this.inflight.shift()?.spoolSeq;
    if (done === undefined || this.o.spool === undefined) return;
    const spool = this.o.spool;
    void spool.ack(done).then(
      () => {
        this.o.metrics.spoolPending.set(spool.pending);
        return this.pump();
      },
      (err: unknown) => this.o.log.warn({ err: String(err) }, "cannot trim the telemetry spool"),
    );
  }

  private setSynced(v: boolean): void {
    this.synced = v;
    this.o.metrics.linkConnected.set(v ? 1 : 0);
    if (v) for (const w of this.syncWaiters.splice(0)) w();
  }

  /** Caps, encodes and writes one message; false (counted) when it is not sent. */
  private send(body: Body, kind: string): boolean {
    const call = this.call;
    if (call === undefined) return false;
    const { message, truncated } = capMessage(create(AgentMessageSchema, { seq: this.seq + 1n, body }));
    if (truncated) {
      this.truncated++;
      this.o.metrics.linkTruncated.inc({ kind });
    }
    const bytes = toBinary(AgentMessageSchema, message);
    if (bytes.length > MESSAGE_LIMIT_BYTES) {
      this.droppedOversize++;
      this.o.metrics.linkDroppedOversize.inc({ kind });
      this.o.log.warn({ kind, bytes: bytes.length, limit: MESSAGE_LIMIT_BYTES }, "message larger than the aggregator accepts even after capping: dropped");
      return false;
    }
    this.seq++;
    call.write(bytes);
    this.o.metrics.messagesSent.inc({ kind });
    return true;
  }

  private connect(): void {
    if (this.stopped || this.client === undefined) return;
    if (this.attempts++ > 0) this.o.metrics.linkReconnects.inc();
    this.seq = 0n;
    this.inflight = [];
    this.sentThrough = 0n;
    const call: Stream = this.client.makeBidiStreamRequest(
      methodPath(AgentService.method.connect),
      (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength),
      (b: Buffer) => fromBinary(AggregatorMessageSchema, b),
    );
    this.call = call;

    call.on("data", (msg: AggregatorMessage) => {
      if (msg.body.case === "ack") {
        if (!this.synced && this.live && msg.body.value.seq >= this.syncSeq) {
          // Only a whole sync counts as reachable again: a stream that fails after Hello backs off.
          this.backoff.reset();
          if (this.downLogged) this.o.log.info({ aggregator: this.o.address }, "aggregator reachable again");
          this.downLogged = false;
          this.setSynced(true);
          // The aggregator learns the agent's status at once, not a heartbeat period later.
          void this.sendHeartbeat();
        }
        this.onAck(msg.body.value.seq);
      } else if (msg.body.case === "command") this.onCommand(msg.body.value);
    });
    call.on("error", (err: ServiceError) => this.lost(call, `${GrpcStatus[err.code] ?? err.code}: ${err.details || err.message}`));
    call.on("end", () => this.lost(call, "stream ended"));

    this.send({ case: "hello", value: this.o.hello() }, "hello");
    this.sendStatus();
    const graphs = this.o.snapshot();
    for (const graph of graphs) this.send({ case: "graphUpsert", value: { graph } }, "upsert");
    for (const inv of this.o.inventories?.() ?? []) this.sendInventory(inv);
    this.send({ case: "syncComplete", value: { containerIds: graphs.map((g) => g.containerId) } }, "sync");
    this.syncSeq = this.seq;
    for (const r of this.o.switchovers?.all() ?? []) this.send({ case: "switchover", value: r }, "switchover");
    this.live = true;
    void this.pump();
  }

  private lost(call: Stream, why: string): void {
    if (this.call !== call) return;
    this.lastError = why;
    this.lastErrorAt = new Date();
    this.call = undefined;
    this.live = false;
    this.setSynced(false);
    if (this.stopped) return;
    if (!this.downLogged) {
      // One line per outage, not one per retry.
      this.o.log.warn({ aggregator: this.o.address, why }, "aggregator unreachable; working on and retrying with backoff");
      this.downLogged = true;
    }
    this.retry = setTimeout(() => this.connect(), this.backoff.next());
    this.retry.unref();
  }

  private onCommand(cmd: Command): void {
    void this.commands.run(cmd).then((result) => {
      this.o.metrics.commands.inc({ result: CommandStatus[result.status] ?? "unknown" });
      // On the stream that is up now, if any; an aggregator still waiting re-sends the id and gets
      // the journaled answer.
      this.send({ case: "commandResult", value: result }, "command-result");
    });
  }
}
