/**
 * The agent's stream to the aggregator. It never blocks the agent: while the aggregator is down
 * the agent keeps building graphs, and on each (re)connect it sends Hello, its full current state
 * and SyncComplete, so the aggregator catches up whatever it missed. Commands from the aggregator
 * go through the command journal and their results back on the stream.
 */
import type * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  AgentMessageSchema,
  AgentService,
  CommandStatus,
  HeartbeatSchema,
  type AgentMessage,
  type AggregatorMessage,
  type Command,
  type Hello,
  type Heartbeat,
} from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Backoff } from "../../common/backoff.js";
import type { TlsMaterial } from "../../common/certs.js";
import { callBidi, channelCredentials, makeClient } from "../../common/grpc.js";
import type { Logger } from "../../common/log.js";
import { unimplementedHandler } from "../actions/command-handler.js";
import { CommandJournal } from "../actions/command-journal.js";
import type { AgentMetrics } from "../metrics.js";
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
}

/** Telemetry items written but not yet acknowledged, at most. */
const MAX_INFLIGHT = 256;

type Body = NonNullable<MessageInitShape<typeof AgentMessageSchema>["body"]>;

export class AggregatorLink {
  private client: grpc.Client | undefined;
  private call: grpc.ClientDuplexStream<AgentMessage, AggregatorMessage> | undefined;
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

  constructor(private readonly o: AggregatorLinkOptions) {
    this.commands = o.commands ?? new CommandJournal(undefined, unimplementedHandler, { log: o.log });
  }

  start(): void {
    this.stopped = false;
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

  inventory(inv: ImageInventory): void {
    if (this.live) this.send({ case: "inventory", value: inv }, "inventory");
  }

  /** New telemetry is in the spool: send it if the stream is up. */
  telemetryAppended(): void {
    void this.pump();
  }

  private async sendHeartbeat(): Promise<void> {
    if (!this.live || this.o.heartbeat === undefined) return;
    let hb: Omit<MessageInitShape<typeof HeartbeatSchema>, "$typeName">;
    try {
      hb = await this.o.heartbeat();
    } catch (err) {
      this.o.log.debug({ err: String(err) }, "heartbeat not built");
      return;
    }
    if (this.live) this.send({ case: "heartbeat", value: hb as Heartbeat }, "heartbeat");
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
            this.send({ case: "telemetry", value: item }, item.body.case ?? "telemetry");
            this.inflight.push({ streamSeq: this.seq, spoolSeq: item.spoolSeq });
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

  private send(body: Body, kind: string): void {
    const call = this.call;
    if (call === undefined) return;
    this.seq++;
    call.write(create(AgentMessageSchema, { seq: this.seq, body }));
    this.o.metrics.messagesSent.inc({ kind });
  }

  private connect(): void {
    if (this.stopped || this.client === undefined) return;
    if (this.attempts++ > 0) this.o.metrics.linkReconnects.inc();
    this.seq = 0n;
    this.inflight = [];
    this.sentThrough = 0n;
    const call = callBidi(this.client, AgentService.method.connect);
    this.call = call;
    let gotReply = false;

    call.on("data", (msg: AggregatorMessage) => {
      if (!gotReply) {
        gotReply = true;
        this.backoff.reset();
        if (this.downLogged) this.o.log.info({ aggregator: this.o.address }, "aggregator reachable again");
        this.downLogged = false;
      }
      if (msg.body.case === "ack") {
        if (!this.synced && this.live && msg.body.value.seq >= this.syncSeq) {
          this.setSynced(true);
          // The aggregator learns the agent's status at once, not a heartbeat period later.
          void this.sendHeartbeat();
        }
        this.onAck(msg.body.value.seq);
      } else if (msg.body.case === "command") this.onCommand(msg.body.value);
    });
    call.on("error", (err: grpc.ServiceError) => this.lost(call, `${err.code}: ${err.details || err.message}`));
    call.on("end", () => this.lost(call, "stream ended"));

    this.send({ case: "hello", value: this.o.hello() }, "hello");
    const graphs = this.o.snapshot();
    for (const graph of graphs) this.send({ case: "graphUpsert", value: { graph } }, "upsert");
    for (const inv of this.o.inventories?.() ?? []) this.send({ case: "inventory", value: inv }, "inventory");
    this.send({ case: "syncComplete", value: { containerIds: graphs.map((g) => g.containerId) } }, "sync");
    this.syncSeq = this.seq;
    this.live = true;
    void this.pump();
  }

  private lost(call: grpc.ClientDuplexStream<AgentMessage, AggregatorMessage>, why: string): void {
    if (this.call !== call) return;
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
