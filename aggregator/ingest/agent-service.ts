/**
 * AgentService.Connect: one stream per node agent. The first message must be Hello; under mTLS
 * the agent certificate's CN must name that node, so an agent can only speak for its own node.
 * Commands to agents leave through the same stream and their results come back on it.
 *
 * Writes about another node's container (node-scope.ts) are refused one by one: acked, not stored,
 * counted and logged, and the stream goes on. Ending the stream instead would make the agent
 * reconnect and send the same spooled item again, forever, cutting off its node's own data.
 */
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  AggregatorMessageSchema,
  CommandSchema,
  type AgentMessage,
  type AggregatorMessage,
  type Command,
  type CommandResult,
} from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { assertNodeName, peerIdentity } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import { MalformedMessage, toStatus } from "../../common/grpc.js";
import type { Logger } from "../../common/log.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { GraphStore } from "../store/graph-store.js";
import type { TelemetryStore } from "../store/telemetry-store.js";
import type { ScoreEngine } from "../risk/score-engine.js";
import { NodeCaps, type NodeCapLimits } from "./node-caps.js";
import { InventoryAssembly } from "./inventory-assembly.js";
import { NodeScope } from "./node-scope.js";
import { boundRecord, RECORD_ID } from "./record-bounds.js";
import { mergeReport, type SwitchoverStore } from "../store/switchover-store.js";
import { AgentLinkViewSchema, type AgentLinkView, type LinkStatus, type NodeContext, type TelemetryStatus } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";

/** What the latest heartbeat of a node said. */
export interface AgentStatus {
  telemetry: TelemetryStatus | undefined;
  node: NodeContext | undefined;
  link: LinkStatus | undefined;
  at: Date;
}

/**
 * A node is connected while its stream's full state has been acknowledged and the aggregator
 * acknowledged one of its messages within this time: three heartbeat periods (10 s by default).
 * A stream that is open but fails before or during its sync is not connected.
 */
export const CONNECTED_ACK_WITHIN_MS = 30_000;

const CONTAINER_ID = /^[0-9a-f]{64}$/;

interface Session {
  node: string;
  call: grpc.ServerDuplexStream<AgentMessage | MalformedMessage, AggregatorMessage>;
  pending: Map<string, (r: CommandResult) => void>;
  inventories: InventoryAssembly;
  synced: boolean;
  lastAck: Date | undefined;
}

export function validateGraph(g: LayerGraph | undefined, node: string): LayerGraph {
  if (g === undefined) throw new ShadowError(Code.InvalidArgument, "graph upsert without a graph");
  if (!CONTAINER_ID.test(g.containerId)) throw new ShadowError(Code.InvalidArgument, `container_id ${JSON.stringify(g.containerId.slice(0, 80))} is not a 64-hex id`);
  if (g.node !== node) throw new ShadowError(Code.PermissionDenied, `graph for node ${JSON.stringify(g.node)} sent on the stream of node ${JSON.stringify(node)}`);
  for (const l of g.layers) {
    if (l.layerId === "") throw new ShadowError(Code.InvalidArgument, `container ${g.containerId}: a layer without layer_id`);
  }
  return g;
}

export class AgentIngest {
  private readonly sessions = new Map<string, Session>();
  private readonly statuses = new Map<string, AgentStatus>();
  /** Why each node's last stream ended, and when. */
  private readonly disconnects = new Map<string, { why: string; at: Date }>();
  private readonly scope: NodeScope;
  /** How much each node may store; ListAgents shows what each was refused. */
  readonly caps: NodeCaps;

  constructor(
    private readonly store: GraphStore,
    private readonly telemetry: TelemetryStore,
    private readonly log: Logger,
    private readonly metrics: AggregatorMetrics,
    /** Whether peers present certificates (false only with --insecure). */
    private readonly requireCert: boolean,
    private readonly scores?: ScoreEngine,
    caps?: NodeCapLimits,
    /** Where agents' switchover records go; without it they are acked and not kept. */
    private readonly records?: SwitchoverStore,
  ) {
    this.scope = new NodeScope(store);
    this.caps = new NodeCaps(store, metrics, log, caps);
  }

  /** Counts and logs a refused write (`quiet`: at debug, for what agents also do in good faith); false so it reads as a scope decision. */
  private refused(node: string, kind: string, subject: string, why: string, quiet = false): false {
    this.metrics.refusedWrites.inc({ kind });
    const line = { node, subject: subject.slice(0, 80), kind, why };
    if (quiet) this.log.debug(line, "agent write not stored");
    else this.log.warn(line, "agent write refused: not its node's container");
    return false;
  }

  /** Nodes whose stream is synced and acknowledged recently (CONNECTED_ACK_WITHIN_MS). */
  connectedNodes(): string[] {
    const since = Date.now() - CONNECTED_ACK_WITHIN_MS;
    return [...this.sessions.values()].filter((s) => s.synced && (s.lastAck?.getTime() ?? 0) >= since).map((s) => s.node);
  }

  /** A node's link: what its agent last said about it and what the aggregator saw. */
  linkView(node: string): AgentLinkView {
    const s = this.sessions.get(node);
    const d = this.disconnects.get(node);
    const agent = this.statuses.get(node)?.link;
    return create(AgentLinkViewSchema, {
      synced: s?.synced ?? false,
      ...(agent !== undefined ? { agent } : {}),
      ...(s?.lastAck !== undefined ? { lastAck: timestampFromDate(s.lastAck) } : {}),
      ...(d !== undefined ? { lastDisconnect: d.why, lastDisconnectAt: timestampFromDate(d.at) } : {}),
    });
  }

  status(node: string): AgentStatus | undefined {
    return this.statuses.get(node);
  }

  /** Sends a command to a node's agent and waits for its result. */
  sendCommand(node: string, cmd: MessageInitShape<typeof CommandSchema>, timeoutMs = 10_000): Promise<CommandResult> {
    const s = this.sessions.get(node);
    if (s === undefined) return Promise.reject(new ShadowError(Code.FailedPrecondition, `no agent connected for node ${node}`));
    const command: Command = create(CommandSchema, cmd);
    if (command.id === "") return Promise.reject(new ShadowError(Code.InvalidArgument, "command without id"));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        s.pending.delete(command.id);
        reject(new ShadowError(Code.AggregatorUnavailable, `no result for command ${command.id} from node ${node} within ${timeoutMs} ms`));
      }, timeoutMs);
      s.pending.set(command.id, (r) => {
        clearTimeout(t);
        resolve(r);
      });
      s.call.write(create(AggregatorMessageSchema, { body: { case: "command", value: command } }));
    });
  }

  readonly handler = (call: grpc.ServerDuplexStream<AgentMessage | MalformedMessage, AggregatorMessage>): void => {
    let session: Session | undefined;
    let queue: Promise<void> = Promise.resolve();
    let failed = false;

    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      const st = toStatus(err);
      this.metrics.rejected.inc({ reason: ShadowError.from(err).code });
      this.log.warn({ node: session?.node, peer: call.getPeer(), err: st.details }, "agent stream refused");
      closed(`refused: ${st.details ?? "unknown"}`);
      call.emit("error", st);
    };

    const certName = (): { role: string; name: string } | undefined => {
      const cert = call.getAuthContext()?.sslPeerCertificate;
      return peerIdentity(cert?.subject);
    };

    const handle = async (msg: AgentMessage | MalformedMessage) => {
      if (msg instanceof MalformedMessage) throw new ShadowError(Code.InvalidArgument, `malformed message: ${msg.reason}`);
      const body = msg.body;
      this.metrics.messages.inc({ kind: body.case ?? "empty" });
      if (session === undefined) {
        if (body.case !== "hello") throw new ShadowError(Code.InvalidArgument, "the first message on a stream must be hello");
        const node = body.value.node;
        if (node === "") throw new ShadowError(Code.InvalidArgument, "hello without a node name");
        // Node names are part of store keys, where "!" separates them from what follows.
        assertNodeName(node);
        if (this.requireCert) {
          const who = certName();
          // The role (OU=agent) was checked at the gRPC edge; which node it may speak for is checked here.
          if (who === undefined || who.name !== node) throw new ShadowError(Code.PermissionDenied, `certificate is for node ${who?.name ?? "(none)"}, hello says ${node}`);
        }
        const old = this.sessions.get(node);
        if (old !== undefined) {
          this.disconnects.set(node, { why: "replaced by a new stream from the agent", at: new Date() });
          old.call.end();
        }
        session = { node, call, pending: new Map(), inventories: new InventoryAssembly(), synced: false, lastAck: undefined };
        this.sessions.set(node, session);
        this.metrics.agentsConnected.set(this.sessions.size);
        const h = body.value.host;
        await this.store.putNode({
          node,
          agentVersion: body.value.agentVersion,
          engineVersion: body.value.engineVersion,
          storageDriver: body.value.storageDriver,
          runtime: body.value.runtime || "docker",
          hostname: h?.hostname ?? "",
          os: h?.os ?? "",
          kernel: h?.kernel ?? "",
          lastSeen: new Date().toISOString(),
          connected: true,
        });
        this.log.info({ node, agent: body.value.agentVersion }, "agent connected");
      } else {
        switch (body.case) {
          case "hello":
            throw new ShadowError(Code.InvalidArgument, "hello sent twice on one stream");
          case "graphUpsert": {
            const g = validateGraph(body.value.graph, session.node);
            const why = this.scope.refusesGraphWrite(session.node, g.containerId);
            if (why !== undefined) this.refused(session.node, "graphUpsert", g.containerId, why);
            else if (this.caps.admitsGraph(session.node, g)) await this.store.putGraph(g);
            break;
          }
          case "graphDelete": {
            const why = this.scope.refusesGraphWrite(session.node, body.value.containerId);
            if (why === undefined) await this.store.deleteGraph(body.value.containerId);
            else this.refused(session.node, "graphDelete", body.value.containerId, why);
            break;
          }
          case "syncComplete": {
            const removed = await this.store.retainNode(session.node, new Set(body.value.containerIds));
            session.synced = true;
            this.log.info({ node: session.node, containers: body.value.containerIds.length, removed }, "agent state synced");
            break;
          }
          case "commandResult": {
            const done = session.pending.get(body.value.commandId);
            session.pending.delete(body.value.commandId);
            done?.(body.value);
            break;
          }
          case "switchover": {
            const r = body.value;
            const why = !RECORD_ID.test(r.id) ? "a record id this aggregator does not accept" : this.scope.refusesRecord(session.node, r, this.records?.get(r.id)?.node);
            if (why !== undefined) this.refused(session.node, "switchover", r.id === "" ? "(no id)" : r.id, why);
            else if (this.records !== undefined) await this.records.put(mergeReport(this.records.get(r.id), boundRecord(r)));
            break;
          }
          case "heartbeat":
            this.statuses.set(session.node, { telemetry: body.value.telemetry, node: body.value.node, link: body.value.link, at: new Date() });
            break;
          case "inventory": {
            const inv = body.value;
            if (!/^sha256:[0-9a-f]{64}$/.test(inv.imageId)) throw new ShadowError(Code.InvalidArgument, `inventory for ${JSON.stringify(inv.imageId.slice(0, 80))}, which is not an image id`);
            // Every chunk is checked; a refused one ends its inventory's assembly.
            const why = this.scope.refusesInventory(session.node, inv.imageId);
            const got = why === undefined ? session.inventories.add(inv) : (session.inventories.abandon(), { refused: why });
            if ("whole" in got) await this.scores?.putInventory(got.whole, session.node);
            // An agent also re-sends inventories of images whose containers are gone: not an attack.
            else if ("refused" in got) this.refused(session.node, "inventory", inv.imageId, got.refused, true);
            break;
          }
          case "telemetry": {
            const node = session.node;
            const fresh = await this.telemetry.put(node, body.value, (containerId, kind) => {
              const why = this.scope.refusesTelemetry(node, containerId);
              return why === undefined || this.refused(node, kind, containerId, why);
            });
            this.metrics.telemetry.inc({ kind: body.value.body.case ?? "empty", outcome: fresh ? "stored" : "repeat" });
            break;
          }
          default:
            throw new ShadowError(Code.InvalidArgument, "empty agent message");
        }
      }
      this.metrics.graphs.set(this.store.size);
      call.write(create(AggregatorMessageSchema, { body: { case: "ack", value: { seq: msg.seq } } }));
      session.lastAck = new Date();
    };

    call.on("data", (msg: AgentMessage | MalformedMessage) => {
      // Keep the agent's order: each message is stored before the next is looked at.
      queue = queue.then(() => (failed ? undefined : handle(msg))).catch(fail);
    });
    const closed = (why: string) => {
      session?.inventories.abandon();
      if (session !== undefined && this.sessions.get(session.node) === session) {
        this.sessions.delete(session.node);
        this.disconnects.set(session.node, { why, at: new Date() });
        this.metrics.agentsConnected.set(this.sessions.size);
        this.log.info({ node: session.node, why }, "agent disconnected");
      }
    };
    call.on("end", () => {
      closed("the agent ended the stream");
      call.end();
    });
    call.on("error", (err: Partial<grpc.StatusObject>) => closed(`${err.code ?? "?"}: ${err.details ?? String(err)}`));
    call.on("cancelled", () => closed("cancelled (the agent went away)"));
  };
}
