/**
 * Image inventories kept per reporting node, so no node can replace what another reported about
 * the same image id (fewer packages, vulnerabilities hidden). Scoring sees one inventory per
 * image: the union of what the nodes reported, so a package any node saw is matched, and when the
 * nodes disagree that is said (a caveat on the image's containers), never merged silently.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Level } from "level";
import { ImageInventorySchema, type ImageInventory, type InventoryProblem, type Package } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { keys } from "./keys.js";

/** The node an inventory from an older store (before per-node inventories) is kept under. */
export const UNKNOWN_NODE = "";

export interface ImageView {
  /** The union of the nodes' inventories. */
  inventory: ImageInventory;
  /** Why the nodes' inventories differ; undefined when they agree (or only one reported). */
  disagreement: string | undefined;
}

const packageKey = (p: Package) => [p.type, p.name, p.version, p.sourceName, p.sourceVersion, p.path, p.layerId].join("\0");
const problemKey = (p: InventoryProblem) => [p.layerId, p.path, p.reason].join("\0");

export class InventoryStore {
  /** By image id, then reporting node. */
  private readonly byImage = new Map<string, Map<string, ImageInventory>>();
  private readonly views = new Map<string, ImageView>();

  private constructor(private readonly db: Level<string, Uint8Array>) {}

  /** Reads every node's inventories; an older store's per-image records become UNKNOWN_NODE's. */
  static async open(db: Level<string, Uint8Array>): Promise<InventoryStore> {
    const s = new InventoryStore(db);
    const moved: Array<{ type: "put"; key: string; value: Uint8Array } | { type: "del"; key: string }> = [];
    for await (const [k, v] of db.iterator(keys.inventoryRange)) {
      moved.push({ type: "put", key: keys.nodeInventory(fromBinary(ImageInventorySchema, v).imageId, UNKNOWN_NODE), value: v }, { type: "del", key: k });
    }
    if (moved.length > 0) await db.batch(moved);
    for await (const [k, v] of db.iterator(keys.nodeInventoryRange)) s.set(keys.nodeOfInventory(k), fromBinary(ImageInventorySchema, v));
    for (const [id, byNode] of s.byImage) s.views.set(id, merge(byNode));
    return s;
  }

  /** The image's inventories by node, with `inv` among them. */
  private set(node: string, inv: ImageInventory): Map<string, ImageInventory> {
    let m = this.byImage.get(inv.imageId);
    if (m === undefined) this.byImage.set(inv.imageId, (m = new Map()));
    m.set(node, inv);
    return m;
  }

  /** Stores `node`'s inventory of an image, replacing only that node's earlier one. */
  async put(node: string, inv: ImageInventory): Promise<void> {
    const ops: Array<{ type: "put"; key: string; value: Uint8Array } | { type: "del"; key: string }> = [
      { type: "put", key: keys.nodeInventory(inv.imageId, node), value: toBinary(ImageInventorySchema, inv) },
    ];
    // A node's own report supersedes one whose node is not known.
    const old = node !== UNKNOWN_NODE && this.byImage.get(inv.imageId)?.has(UNKNOWN_NODE) === true;
    if (old) ops.push({ type: "del", key: keys.nodeInventory(inv.imageId, UNKNOWN_NODE) });
    await this.db.batch(ops);
    if (old) this.byImage.get(inv.imageId)?.delete(UNKNOWN_NODE);
    this.views.set(inv.imageId, merge(this.set(node, inv)));
  }

  get(imageId: string): ImageView | undefined {
    return this.views.get(imageId);
  }

  /** What one node reported. */
  ofNode(imageId: string, node: string): ImageInventory | undefined {
    return this.byImage.get(imageId)?.get(node);
  }
}

/** The union of the nodes' inventories of one image (nodes in name order, for a stable result). */
function merge(byNode: ReadonlyMap<string, ImageInventory>): ImageView {
  const nodes = [...byNode.keys()].sort();
  const invs = nodes.flatMap((n) => byNode.get(n) ?? []);
  const first = invs[0] ?? create(ImageInventorySchema);
  if (invs.length <= 1) return { inventory: first, disagreement: undefined };
  const packages = new Map<string, Package>();
  const partial = new Map<string, InventoryProblem>();
  for (const inv of invs) {
    for (const p of inv.packages) if (!packages.has(packageKey(p))) packages.set(packageKey(p), p);
    for (const p of inv.partial) if (!partial.has(problemKey(p))) partial.set(problemKey(p), p);
  }
  const latest = invs.reduce((a, b) => ((b.scannedAt?.seconds ?? 0n) > (a.scannedAt?.seconds ?? 0n) ? b : a));
  const inventory = create(ImageInventorySchema, {
    imageId: first.imageId,
    packages: [...packages.values()],
    partial: [...partial.values()],
    layerIds: first.layerIds,
    truncated: invs.some((inv) => inv.truncated),
    ...(first.os !== undefined ? { os: first.os } : {}),
    ...(latest.scannedAt !== undefined ? { scannedAt: latest.scannedAt } : {}),
  });
  const signature = (inv: ImageInventory) => [inv.os?.id, inv.os?.versionId, ...inv.packages.map(packageKey).sort()].join("\n");
  const agree = invs.every((inv) => signature(inv) === signature(first));
  const name = (n: string) => (n === UNKNOWN_NODE ? "an earlier report" : `node ${n}`);
  const disagreement = agree
    ? undefined
    : `nodes disagree about this image's inventory (${nodes.map((n) => `${name(n)}: ${byNode.get(n)?.packages.length ?? 0} packages`).join(", ")}); matched against all ${packages.size} they reported`;
  return { inventory, disagreement };
}
