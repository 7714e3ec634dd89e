/**
 * Which node may write about which container. A container belongs to the node that reported it
 * and still has it: only that node may upsert or delete it, and only that node's windows and
 * detections about it are stored. Once its owner deletes it, another node may report the same id
 * (a container that moved), and the former owner may still deliver telemetry about it that its
 * spool held back while the link was down. A node reports the inventory only of images it runs.
 */
import type { GraphStore } from "../store/graph-store.js";

/** Former owners remembered for late telemetry; past this the oldest are forgotten. */
const FORMER_OWNERS = 100_000;

export class NodeScope {
  /** Deleted containers and the node that had them, oldest first. */
  private readonly former = new Map<string, string>();

  constructor(private readonly graphs: GraphStore) {
    graphs.on("delete", (id, node) => {
      this.former.delete(id);
      this.former.set(id, node);
      if (this.former.size > FORMER_OWNERS) {
        const oldest = this.former.keys().next();
        if (oldest.done !== true) this.former.delete(oldest.value);
      }
    });
    graphs.on("upsert", (g) => this.former.delete(g.containerId));
  }

  /** Why `node` may not upsert or delete `containerId`; undefined when it may. */
  refusesGraphWrite(node: string, containerId: string): string | undefined {
    const owner = this.graphs.get(containerId)?.node;
    return owner === undefined || owner === node ? undefined : `container ${containerId.slice(0, 12)} belongs to node ${owner}`;
  }

  /**
   * Why `node` may not report an image's inventory: it runs no container of that image, so its
   * report could only add to (inflate) what other nodes' containers of that image are scored by.
   */
  refusesInventory(node: string, imageId: string): string | undefined {
    return this.graphs.all().some((g) => g.node === node && g.imageId === imageId) ? undefined : `node ${node} runs no container of image ${imageId.slice(0, 19)}`;
  }

  /**
   * Why `node` may not report this switchover record: it names another node, or a container
   * (original or shadow) another node has or had, or the id is another node's record. A
   * container nobody reported yet (a shadow just started, an original recreated) is the
   * node's to name.
   */
  refusesRecord(node: string, r: { node: string; containerId: string; shadowContainerId: string }, storedNode: string | undefined): string | undefined {
    if (r.node !== node) return `record for node ${JSON.stringify(r.node.slice(0, 80))} sent on the stream of node ${node}`;
    if (storedNode !== undefined && storedNode !== node) return `record belongs to node ${storedNode}`;
    for (const id of [r.containerId, r.shadowContainerId]) {
      if (id === "") continue;
      const owner = this.graphs.get(id)?.node ?? this.former.get(id);
      if (owner !== undefined && owner !== node) return `container ${id.slice(0, 12)} belongs to node ${owner}`;
    }
    return undefined;
  }

  /** Why `node` may not store telemetry about `containerId`; undefined when it may. */
  refusesTelemetry(node: string, containerId: string): string | undefined {
    const owner = this.graphs.get(containerId)?.node ?? this.former.get(containerId);
    if (owner === node) return undefined;
    return owner === undefined ? `container ${containerId.slice(0, 12)} was never reported by node ${node}` : `container ${containerId.slice(0, 12)} belongs to node ${owner}`;
  }
}
