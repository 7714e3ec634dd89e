/**
 * Reads each image's package inventory once (per image: its whole layer chain) off the hot path,
 * one image at a time, and keeps the result in level so a restarted agent does not read the
 * layers again. Emits each inventory for the link to send.
 *
 * Reading is low priority: one image at a time (a queue), yielding to the event loop every few
 * milliseconds, within a per-image budget of time, directory entries and bytes; an image past
 * its budget is sent partial, the reason in its `partial`, and is not read again.
 */
import { EventEmitter } from "node:events";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ImageInventorySchema, type ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { Logger } from "../../common/log.js";
import type { ResolvedImage } from "../layers/image-layers.js";
import type { StateSublevel } from "../state/state-sublevel.js";
import { inventoryMessage } from "./inventory-message.js";
import { inventoryOf, type InventoryLayer, type InventoryOptions, type ImageInventory as LayerInventory } from "./layer-inventory.js";
import type { InventoryBudget } from "./inventory-budget.js";

export interface InventoryScannerEvents {
  inventory: [ImageInventory];
}

export interface InventoryScannerOptions {
  /** What one image may cost (the rest from DEFAULT_INVENTORY_BUDGET). */
  budget?: Partial<InventoryBudget>;
  /** Reads one image's layers (tests wrap it to watch the queue). */
  read?: (layers: InventoryLayer[], options: InventoryOptions) => Promise<LayerInventory>;
}

/** Bump when what an inventory holds changes, so cached ones are read again. */
const CACHE_VERSION = "1";

export class InventoryScanner extends EventEmitter<InventoryScannerEvents> {
  private readonly done = new Map<string, ImageInventory>();
  private readonly queued = new Set<string>();
  private chain: Promise<void> = Promise.resolve();
  private readonly stopping = new AbortController();
  /** `overBudget`: images read partial because their budget was spent. */
  readonly stats = { scanned: 0, cached: 0, failed: 0, overBudget: 0 };

  /** `db`: the cache (a sublevel of the agent's state); without one, every agent start reads again. */
  constructor(
    private readonly db: StateSublevel<Uint8Array> | undefined,
    private readonly log: Logger,
    private readonly options: InventoryScannerOptions = {},
  ) {
    super();
  }

  /**
   * Stops: images still queued are not read, the one being read stops at its next step and is
   * neither kept nor sent (a stop is no reason to call an image partial). The cache's database is
   * closed by its owner.
   */
  async close(): Promise<void> {
    this.stopping.abort();
    await this.chain.catch(() => undefined);
  }

  /** Every inventory known (sent in full after each reconnect). */
  all(): ImageInventory[] {
    return [...this.done.values()];
  }

  /** Asks for an image's inventory; it is read (or loaded from the cache) in the background. */
  want(image: ResolvedImage): void {
    if (this.done.has(image.id) || this.queued.has(image.id)) return;
    this.queued.add(image.id);
    this.chain = this.chain.then(() => this.scan(image)).finally(() => this.queued.delete(image.id));
  }

  /** Resolves when everything asked for so far is done. */
  idle(): Promise<void> {
    return this.chain;
  }

  private async scan(image: ResolvedImage): Promise<void> {
    if (this.stopping.signal.aborted) return;
    const key = `v${CACHE_VERSION}!${image.id}`;
    try {
      const hit = await this.db?.get(key);
      if (hit !== undefined) {
        const inv = fromBinary(ImageInventorySchema, hit);
        this.stats.cached++;
        this.done.set(image.id, inv);
        this.emit("inventory", inv);
        return;
      }
      const started = Date.now();
      const layers = image.layers.map((l) => ({ diffId: l.diffId, dir: l.dir }));
      const read = this.options.read ?? inventoryOf;
      const r = await read(layers, { signal: this.stopping.signal, ...(this.options.budget !== undefined ? { budget: this.options.budget } : {}) });
      if (this.stopping.signal.aborted) return;
      if (r.overBudget !== undefined) this.stats.overBudget++;
      const inv = inventoryMessage(image.id, image.layers.map((l) => l.diffId), r);
      await this.db?.put(key, toBinary(ImageInventorySchema, inv));
      this.stats.scanned++;
      this.done.set(image.id, inv);
      this.log.info({ image: image.id.slice(0, 19), packages: inv.packages.length, partial: inv.partial.length, ms: Date.now() - started, ...(r.overBudget !== undefined ? { overBudget: r.overBudget } : {}) }, "image inventory read");
      this.emit("inventory", inv);
    } catch (err) {
      this.stats.failed++;
      this.log.warn({ image: image.id.slice(0, 19), err: String(err) }, "cannot read the image's package inventory");
    }
  }
}
