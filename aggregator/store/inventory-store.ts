/**
 * Image inventories (the packages each layer installs) as the agents report them, kept in level
 * and in memory: an image is read once by an agent, then matched again on every feed change.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Level } from "level";
import { ImageInventorySchema, type ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { keys } from "./keys.js";

export class InventoryStore {
  private readonly inventories = new Map<string, ImageInventory>();

  private constructor(private readonly db: Level<string, Uint8Array>) {}

  static async open(db: Level<string, Uint8Array>): Promise<InventoryStore> {
    const s = new InventoryStore(db);
    for await (const v of db.values(keys.inventoryRange)) {
      const inv = fromBinary(ImageInventorySchema, v);
      s.inventories.set(inv.imageId, inv);
    }
    return s;
  }

  get(imageId: string): ImageInventory | undefined {
    return this.inventories.get(imageId);
  }

  async put(inv: ImageInventory): Promise<void> {
    await this.db.put(keys.inventory(inv.imageId), toBinary(ImageInventorySchema, inv));
    this.inventories.set(inv.imageId, inv);
  }
}
