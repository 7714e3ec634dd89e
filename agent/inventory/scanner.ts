/**
 * Reads each image's package inventory once (per image: its whole layer chain) off the hot path,
 * one image at a time, and keeps the result in level so a restarted agent does not read the
 * layers again. Emits each inventory for the link to send.
 */
import { EventEmitter } from "node:events";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import {
  ImageInventorySchema,
  InventoryProblemSchema,
  OsReleaseSchema,
  PackageSchema,
  type ImageInventory,
} from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { Logger } from "../../common/log.js";
import type { ResolvedImage } from "../layers/image-layers.js";
import type { StateSublevel } from "../state/state-sublevel.js";
import { inventoryOf } from "./layer-inventory.js";

export interface InventoryScannerEvents {
  inventory: [ImageInventory];
}

/** Bump when what an inventory holds changes, so cached ones are read again. */
const CACHE_VERSION = "1";

export class InventoryScanner extends EventEmitter<InventoryScannerEvents> {
  private readonly done = new Map<string, ImageInventory>();
  private readonly queued = new Set<string>();
  private chain: Promise<void> = Promise.resolve();
  readonly stats = { scanned: 0, cached: 0, failed: 0 };

  /** `db`: the cache (a sublevel of the agent's state); without one, every agent start reads again. */
  constructor(
    private readonly db: StateSublevel<Uint8Array> | undefined,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Waits for the image being read; the cache's database is closed by its owner. */
  async close(): Promise<void> {
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
      const r = await inventoryOf(layers);
      const inv = create(ImageInventorySchema, {
        imageId: image.id,
        packages: r.packages.map((p) =>
          create(PackageSchema, {
            type: p.type,
            name: p.name,
            version: p.version,
            sourceName: p.sourceName ?? "",
            sourceVersion: p.sourceVersion ?? "",
            path: p.path,
            layerId: p.layerId,
          }),
        ),
        ...(r.os !== undefined
          ? { os: create(OsReleaseSchema, { id: r.os.id, versionId: r.os.versionId, codename: r.os.versionCodename ?? "", prettyName: r.os.prettyName ?? "" }) }
          : {}),
        partial: r.partial.map((x) => create(InventoryProblemSchema, { layerId: x.layerId, path: x.path, reason: x.reason })),
        scannedAt: timestampNow(),
        layerIds: image.layers.map((l) => l.diffId),
      });
      await this.db?.put(key, toBinary(ImageInventorySchema, inv));
      this.stats.scanned++;
      this.done.set(image.id, inv);
      this.log.info({ image: image.id.slice(0, 19), packages: inv.packages.length, partial: inv.partial.length, ms: Date.now() - started }, "image inventory read");
      this.emit("inventory", inv);
    } catch (err) {
      this.stats.failed++;
      this.log.warn({ image: image.id.slice(0, 19), err: String(err) }, "cannot read the image's package inventory");
    }
  }
}
