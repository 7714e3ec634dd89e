/**
 * Durable store of layer graphs and nodes in level, with an in-memory index for queries and an
 * event for every change (WatchGraphs follows it). Level is the truth: the index is rebuilt from
 * it on open, so a restarted aggregator answers as before.
 */
import { EventEmitter } from "node:events";
import { mkdir } from "node:fs/promises";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Level } from "level";
import { LayerGraphSchema, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { keys, SCHEMA_VERSION } from "./keys.js";

export interface NodeRecord {
  node: string;
  agentVersion: string;
  engineVersion: string;
  storageDriver: string;
  hostname: string;
  os: string;
  kernel: string;
  lastSeen: string;
  connected: boolean;
}

export interface GraphStoreEvents {
  upsert: [LayerGraph];
  delete: [string, string];
}

export class GraphStore extends EventEmitter<GraphStoreEvents> {
  private readonly graphs = new Map<string, LayerGraph>();
  private readonly nodes = new Map<string, NodeRecord>();

  private constructor(readonly db: Level<string, Uint8Array>) {
    super();
    this.setMaxListeners(0);
  }

  static async open(dir: string): Promise<GraphStore> {
    await mkdir(dir, { recursive: true });
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" });
    try {
      await db.open();
    } catch (err) {
      throw new ShadowError(Code.FailedPrecondition, `cannot open the store in ${dir} (is another aggregator using it?)`, { cause: err });
    }
    const store = new GraphStore(db);
    await store.load();
    return store;
  }

  private async load(): Promise<void> {
    const dec = new TextDecoder();
    const schema = await this.db.get(keys.schema);
    if (schema === undefined) await this.db.put(keys.schema, new TextEncoder().encode(SCHEMA_VERSION));
    for await (const [, v] of this.db.iterator(keys.graphRange)) {
      const g = fromBinary(LayerGraphSchema, v);
      this.graphs.set(g.containerId, g);
    }
    for await (const [, v] of this.db.iterator(keys.nodeRange)) {
      const n = JSON.parse(dec.decode(v)) as NodeRecord;
      // Nobody is connected to a store that was just opened.
      this.nodes.set(n.node, { ...n, connected: false });
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  all(): LayerGraph[] {
    return [...this.graphs.values()];
  }

  get size(): number {
    return this.graphs.size;
  }

  get(containerId: string): LayerGraph | undefined {
    return this.graphs.get(containerId);
  }

  nodeList(): NodeRecord[] {
    return [...this.nodes.values()];
  }

  async putGraph(g: LayerGraph): Promise<void> {
    await this.db.put(keys.graph(g.containerId), toBinary(LayerGraphSchema, g));
    this.graphs.set(g.containerId, g);
    this.emit("upsert", g);
  }

  async deleteGraph(containerId: string): Promise<void> {
    const g = this.graphs.get(containerId);
    if (g === undefined) return;
    await this.db.del(keys.graph(containerId));
    this.graphs.delete(containerId);
    this.emit("delete", containerId, g.node);
  }

  /** After a node's full sync: forgets its containers that the sync did not list. */
  async retainNode(node: string, keep: ReadonlySet<string>): Promise<number> {
    const stale = [...this.graphs.values()].filter((g) => g.node === node && !keep.has(g.containerId));
    for (const g of stale) await this.deleteGraph(g.containerId);
    return stale.length;
  }

  async putNode(n: NodeRecord): Promise<void> {
    await this.db.put(keys.node(n.node), new TextEncoder().encode(JSON.stringify(n)));
    this.nodes.set(n.node, n);
  }
}
