/**
 * Durable store of layer graphs and nodes in level, with an in-memory index for queries and an
 * event for every change (WatchGraphs follows it). Level is the truth: the index is rebuilt from
 * it on open, so a restarted aggregator answers as before.
 */
import { EventEmitter } from "node:events";
import { LayerGraphSchema, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { silentLogger, type Logger } from "../../common/log.js";
import { openPrivateLevel } from "../../common/private-files.js";
import { keys, SCHEMA_VERSION } from "./keys.js";
import { MessageStore } from "./message-store.js";
import { RecoverableLevel } from "../../common/recoverable-level.js";
import type { StoreHealth, StoreRecoveryOptions } from "../../common/store-health.js";

export interface NodeRecord {
  node: string;
  agentVersion: string;
  engineVersion: string;
  storageDriver: string;
  /** docker or containerd ("" from an agent that predates the field: docker). */
  runtime?: string;
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
  private readonly nodes = new Map<string, NodeRecord>();

  private constructor(
    /** Shared by every store, feeds and scores; it recovers from storage errors in place. */
    readonly db: RecoverableLevel,
    private readonly graphs: MessageStore<typeof LayerGraphSchema>,
  ) {
    super();
    this.setMaxListeners(0);
  }

  /**
   * Opens (or makes) the store in `dir`, private to this user; `log` hears what was tightened and
   * how the store's health goes; `recovery` paces the retries after a storage error.
   */
  static async open(dir: string, log: Logger = silentLogger(), recovery: StoreRecoveryOptions = {}): Promise<GraphStore> {
    const db = new RecoverableLevel(dir, log, recovery);
    await openPrivateLevel(dir, log, () =>
      db.open().catch((err: unknown) => {
        throw new ShadowError(Code.FailedPrecondition, `cannot open the store in ${dir} (is another aggregator using it?)`, { cause: err });
      }),
    );
    try {
      const schema = await db.get(keys.schema);
      if (schema === undefined) await db.put(keys.schema, new TextEncoder().encode(SCHEMA_VERSION));
      const store = new GraphStore(db, await MessageStore.open(db, LayerGraphSchema, { key: keys.graph, range: keys.graphRange, id: (g) => g.containerId }));
      await store.loadNodes();
      return store;
    } catch (err) {
      // A new store on a full disk: no recovery left running behind a store nobody holds.
      await db.health.stop();
      await db.close();
      throw err;
    }
  }

  private async loadNodes(): Promise<void> {
    const dec = new TextDecoder();
    for await (const [, v] of this.db.iterator(keys.nodeRange)) {
      const n = JSON.parse(dec.decode(v)) as NodeRecord;
      // Nobody is connected to a store that was just opened.
      this.nodes.set(n.node, { ...n, connected: false });
    }
  }

  /** Whether writes work; reads keep serving while they do not. */
  get health(): StoreHealth {
    return this.db.health;
  }

  async close(): Promise<void> {
    await this.db.health.stop();
    await this.db.close();
  }

  all(): LayerGraph[] {
    return this.graphs.all();
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
    await this.graphs.put(g);
    this.emit("upsert", g);
  }

  async deleteGraph(containerId: string): Promise<void> {
    const g = await this.graphs.delete(containerId);
    if (g !== undefined) this.emit("delete", containerId, g.node);
  }

  /** After a node's full sync: forgets its containers that the sync did not list. */
  async retainNode(node: string, keep: ReadonlySet<string>): Promise<number> {
    const stale = this.graphs.all().filter((g) => g.node === node && !keep.has(g.containerId));
    for (const g of stale) await this.deleteGraph(g.containerId);
    return stale.length;
  }

  async putNode(n: NodeRecord): Promise<void> {
    await this.db.put(keys.node(n.node), new TextEncoder().encode(JSON.stringify(n)));
    this.nodes.set(n.node, n);
  }
}
