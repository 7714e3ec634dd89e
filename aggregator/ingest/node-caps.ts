/**
 * How much one node may store: a number of containers and a total of graph bytes. Without caps
 * one agent stored 100,000 containers, and every client's `containers` and `scores` failed (their
 * replies over the message limit) and the aggregator held what the node chose to send. Past a cap
 * the node's graph upserts are refused the way node-scope refusals are: acked, not stored,
 * counted (per cap in metrics, per node in ListAgents) and logged, and the stream goes on, so the
 * agent neither loops nor loses its other writes. Updates of a container the node already has
 * stay allowed while they fit the byte cap, and deletes always are.
 */
import { LayerGraphSchema, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { Logger } from "../../common/log.js";
import { encodedSize } from "../../common/encoded-size.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { GraphStore } from "../store/graph-store.js";

export interface NodeCapLimits {
  /** Containers one node may have stored. */
  maxContainers: number;
  /** Encoded bytes of all of one node's graphs together. */
  maxGraphBytes: number;
}

/**
 * A busy node runs a few hundred containers and keeps its exited ones; a graph is a few KB (a
 * thousand processes with argv make it a few hundred).
 */
export const DEFAULT_NODE_CAPS: NodeCapLimits = { maxContainers: 5000, maxGraphBytes: 64 * 1024 * 1024 };

/** What a node's refusals look like in ListAgents. */
export interface CapRefusals {
  count: number;
  /** The latest reason. */
  reason: string;
}

type Cap = "containers" | "graph_bytes";

interface NodeUse {
  containers: number;
  bytes: number;
}

export class NodeCaps {
  private readonly use = new Map<string, NodeUse>();
  /** Bytes of each stored graph, by container id, to know what an update or a delete frees. */
  private readonly bytes = new Map<string, number>();
  private readonly refusals = new Map<string, CapRefusals & { cap: Cap }>();

  constructor(
    graphs: GraphStore,
    private readonly metrics: AggregatorMetrics,
    private readonly log: Logger,
    readonly limits: NodeCapLimits = DEFAULT_NODE_CAPS,
  ) {
    for (const g of graphs.all()) this.stored(g);
    graphs.on("upsert", (g) => this.stored(g));
    graphs.on("delete", (id, node) => this.forget(id, node));
  }

  private usage(node: string): NodeUse {
    let u = this.use.get(node);
    if (u === undefined) this.use.set(node, (u = { containers: 0, bytes: 0 }));
    return u;
  }

  private stored(g: LayerGraph): void {
    const before = this.bytes.get(g.containerId);
    const n = encodedSize(LayerGraphSchema, g);
    const u = this.usage(g.node);
    if (before === undefined) u.containers++;
    u.bytes += n - (before ?? 0);
    this.bytes.set(g.containerId, n);
  }

  private forget(containerId: string, node: string): void {
    const n = this.bytes.get(containerId);
    if (n === undefined) return;
    this.bytes.delete(containerId);
    const u = this.usage(node);
    u.containers--;
    u.bytes -= n;
  }

  /** Whether `node` may store `g` (node scope already checked); a refusal is counted and logged here. */
  admitsGraph(node: string, g: LayerGraph): boolean {
    const u = this.usage(node);
    const before = this.bytes.get(g.containerId);
    const n = encodedSize(LayerGraphSchema, g);
    const { maxContainers, maxGraphBytes } = this.limits;
    if (before === undefined && u.containers >= maxContainers) {
      return this.refuse(node, "containers", g, `node ${node} has ${u.containers} containers stored, its cap (--max-containers-per-node ${maxContainers})`);
    }
    const after = u.bytes - (before ?? 0) + n;
    if (after > maxGraphBytes) {
      return this.refuse(node, "graph_bytes", g, `node ${node}'s graphs would take ${mib(after)} with this one (${mib(n)}), over its cap of ${mib(maxGraphBytes)} (--max-graph-mb-per-node)`);
    }
    return true;
  }

  /** The node's refusals since the aggregator started, if any. */
  refused(node: string): CapRefusals | undefined {
    const r = this.refusals.get(node);
    return r && { count: r.count, reason: r.reason };
  }

  private refuse(node: string, cap: Cap, g: LayerGraph, reason: string): false {
    this.metrics.cappedWrites.inc({ cap });
    const r = this.refusals.get(node);
    // Warned once per node and cap: a node past its cap repeats the refusal with every sync.
    const line = { node, cap, container: g.containerId.slice(0, 12), refused: (r?.count ?? 0) + 1, why: reason };
    if (r?.cap !== cap) this.log.warn(line, "agent write refused: node over its cap");
    else this.log.debug(line, "agent write refused: node over its cap");
    this.refusals.set(node, { count: (r?.count ?? 0) + 1, reason, cap });
    return false;
  }
}

function mib(n: number): string {
  return n >= 1024 * 1024 ? `${(n / (1024 * 1024)).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}
