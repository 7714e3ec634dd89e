/**
 * An image inventory too large for one message (60,000 dpkg packages make about 12 MB) goes as
 * several: each chunk repeats the header (image id, OS, layers, scan time) and carries the next
 * run of packages, then of problems, with its index, the count and one generation id, so the
 * aggregator can put them together and store the inventory only once all of them arrived.
 */
import { randomUUID } from "node:crypto";
import { toBinary } from "@bufbuild/protobuf";
import { ImageInventorySchema, type ImageInventory, type InventoryProblem, type Package } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";

/** Bytes of packages and problems per chunk: a quarter of the message limit, so a chunk never nears it. */
export const INVENTORY_CHUNK_BYTES = 1024 * 1024;

/** An upper bound of a string field's encoded size: tag, length (strings under 2 MiB) and bytes. */
const field = (s: string) => (s === "" ? 0 : 4 + Buffer.byteLength(s));
const packageBytes = (p: Package) => 4 + field(p.type) + field(p.name) + field(p.version) + field(p.sourceName) + field(p.sourceVersion) + field(p.path) + field(p.layerId);
const problemBytes = (p: InventoryProblem) => 4 + field(p.layerId) + field(p.path) + field(p.reason);

/** The inventory as it goes on the stream: itself when it fits in one chunk, else its chunks in order. */
export function inventoryChunks(inv: ImageInventory, maxBytes = INVENTORY_CHUNK_BYTES): ImageInventory[] {
  const header = toBinary(ImageInventorySchema, { ...inv, packages: [], partial: [] }).length;
  const room = Math.max(1, maxBytes - header);
  const runs: Array<{ packages: Package[]; partial: InventoryProblem[] }> = [];
  let run = { packages: [] as Package[], partial: [] as InventoryProblem[] };
  let used = 0;
  const add = (bytes: number, put: () => void) => {
    if (used > 0 && used + bytes > room) {
      runs.push(run);
      run = { packages: [], partial: [] };
      used = 0;
    }
    put();
    used += bytes;
  };
  for (const p of inv.packages) add(packageBytes(p), () => run.packages.push(p));
  for (const p of inv.partial) add(problemBytes(p), () => run.partial.push(p));
  runs.push(run);
  if (runs.length === 1) return [inv];
  const generation = randomUUID();
  return runs.map((r, i) => ({ ...inv, packages: r.packages, partial: r.partial, chunkIndex: i, chunkCount: runs.length, generation }));
}
