/**
 * An image's vulnerability matches under the current index, kept until the index changes (each
 * feed change bumps its generation) or the image's inventory does: scoring a container is then a
 * lookup, and a feed change rematches each image once, not each container.
 */
import type { ImageInventory, VulnMatch } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { VulnIndex } from "./index.js";
import { matchInventory, type MatchProblems } from "./matcher.js";

export interface ImageMatchResult {
  matches: VulnMatch[];
  problems: MatchProblems;
}

export class ImageMatches {
  private readonly cache = new Map<string, ImageMatchResult & { generation: number }>();

  constructor(private readonly index: VulnIndex) {}

  get(inv: ImageInventory): ImageMatchResult {
    const gen = this.index.generation;
    const hit = this.cache.get(inv.imageId);
    if (hit !== undefined && hit.generation === gen) return hit;
    const problems: MatchProblems = { unknownEcosystem: 0, unparseableVersion: 0, samples: [] };
    const entry = { generation: gen, matches: matchInventory(this.index, inv, problems), problems };
    this.cache.set(inv.imageId, entry);
    return entry;
  }

  /** The image's inventory changed: match it again next time. */
  forget(imageId: string): void {
    this.cache.delete(imageId);
  }
}
