/**
 * Puts an agent's inventory chunks back together (agent/link/inventory-chunks.ts). One assembly
 * per stream, since an agent sends one inventory's chunks back to back: a new inventory's first
 * chunk abandons an unfinished one, as do a chunk out of order, a bound passed, the time bound
 * and the end of the stream. Only a whole inventory is handed on, so a half-sent one never
 * replaces the last complete one.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { ImageInventorySchema, type ImageInventory, type InventoryProblem, type Package } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";

/** Packages (and problems) in one image's inventory, at most: far more than any image holds. */
export const MAX_INVENTORY_PACKAGES = 200_000;
/** Encoded bytes held for one stream's unfinished inventory: 60,000 packages are about 12 MB. */
export const ASSEMBLY_MAX_BYTES = 64 * 1024 * 1024;
/** Chunks of one inventory: 64 MiB in the agent's 1 MiB chunks, with room for smaller ones. */
export const MAX_CHUNKS = 256;
/** An agent writes its chunks back to back; one still unfinished after this is given up. */
export const ASSEMBLY_MAX_MS = 60_000;

/** A chunk's outcome: the whole inventory, more to come, or why it is not taken. */
export type ChunkOutcome = { whole: ImageInventory } | { pending: true } | { refused: string };

interface Assembly {
  first: ImageInventory;
  next: number;
  bytes: number;
  packages: Package[];
  partial: InventoryProblem[];
  truncated: boolean;
  timer: NodeJS.Timeout;
}

export class InventoryAssembly {
  private current: Assembly | undefined;

  /** Takes one inventory message (a whole one or a chunk). */
  add(inv: ImageInventory): ChunkOutcome {
    if (inv.chunkCount <= 1) {
      if (inv.packages.length > MAX_INVENTORY_PACKAGES) return { refused: `inventory of ${inv.packages.length} packages is more than any image holds` };
      return { whole: inv.chunkCount === 0 ? inv : assembled(inv, inv.packages, inv.partial, inv.truncated) };
    }
    if (inv.chunkCount > MAX_CHUNKS) return { refused: `inventory in ${inv.chunkCount} chunks (at most ${MAX_CHUNKS})` };
    if (inv.chunkIndex === 0) {
      this.abandon();
      const timer = setTimeout(() => this.abandon(), ASSEMBLY_MAX_MS);
      timer.unref();
      this.current = { first: inv, next: 0, bytes: 0, packages: [], partial: [], truncated: false, timer };
    }
    const a = this.current;
    if (a === undefined || a.first.imageId !== inv.imageId || a.first.generation !== inv.generation || a.first.chunkCount !== inv.chunkCount || a.next !== inv.chunkIndex) {
      this.abandon();
      return { refused: `inventory chunk ${inv.chunkIndex + 1}/${inv.chunkCount} out of order` };
    }
    a.bytes += toBinary(ImageInventorySchema, inv).length;
    if (a.bytes > ASSEMBLY_MAX_BYTES) return this.refuse(`inventory larger than ${ASSEMBLY_MAX_BYTES} bytes`);
    if (a.packages.length + inv.packages.length > MAX_INVENTORY_PACKAGES || a.partial.length + inv.partial.length > MAX_INVENTORY_PACKAGES) {
      return this.refuse(`inventory of more than ${MAX_INVENTORY_PACKAGES} packages is more than any image holds`);
    }
    a.packages.push(...inv.packages);
    a.partial.push(...inv.partial);
    a.truncated ||= inv.truncated;
    a.next++;
    if (a.next < inv.chunkCount) return { pending: true };
    this.abandon();
    return { whole: assembled(a.first, a.packages, a.partial, a.truncated) };
  }

  /** Forgets the unfinished inventory, if any (also when its image's chunks are refused). */
  abandon(): void {
    if (this.current !== undefined) clearTimeout(this.current.timer);
    this.current = undefined;
  }

  private refuse(why: string): ChunkOutcome {
    this.abandon();
    return { refused: why };
  }
}

/** The inventory as stored: the header of its first chunk, every package, no chunk fields. */
function assembled(first: ImageInventory, packages: Package[], partial: InventoryProblem[], truncated: boolean): ImageInventory {
  return create(ImageInventorySchema, {
    imageId: first.imageId,
    packages,
    partial,
    layerIds: first.layerIds,
    truncated,
    ...(first.os !== undefined ? { os: first.os } : {}),
    ...(first.scannedAt !== undefined ? { scannedAt: first.scannedAt } : {}),
  });
}
