/**
 * A rebuild job's identity: the source image and the reasons, so that the same image planned
 * again for the same reasons is the same job, and new reasons make a new one.
 */
import { createHash } from "node:crypto";

/** Reasons kept per job: a job's record stays small whatever a layer's advisories number. */
export const MAX_REASONS = 64;

/** Hex digits of a job id: 96 bits, never equal by chance among the jobs one aggregator keeps. */
const ID_HEX = 24;

/**
 * The reasons as a job holds them: distinct and sorted. Past MAX_REASONS the `rank`-first ones are
 * kept (drift and anomaly, then the weightiest advisories), so a key stays the same across plans.
 */
export function normalizeReasons(reasons: Iterable<string>, rank: (r: string) => number = () => 0): string[] {
  const distinct = [...new Set(reasons)].filter((r) => r !== "");
  if (distinct.length > MAX_REASONS) {
    distinct.sort((a, b) => rank(b) - rank(a) || (a < b ? -1 : a > b ? 1 : 0));
    distinct.length = MAX_REASONS;
  }
  return distinct.sort();
}

/** The job id of (image id, normalized reasons): hex, so level keys and prefixes stay simple. */
export function jobIdOf(imageId: string, reasons: readonly string[]): string {
  const h = createHash("sha256");
  h.update(imageId);
  for (const r of reasons) h.update(`\0${r}`);
  return h.digest("hex").slice(0, ID_HEX);
}
