/** What reading one image's inventory may cost, all its layers together (counted by scan-budget.ts). */

export interface InventoryBudget {
  /** Wall-clock milliseconds from the start of the image's search to its last database read. */
  maxMs: number;
  /** Directory entries listed plus files checked, all layers together. */
  maxEntries: number;
  /** Database and manifest bytes read, all layers together (the read that crosses it completes). */
  maxBytes: number;
}

/**
 * Five layers at the per-layer entry cap, and a few of the largest status files there are; an
 * ordinary image is read in well under a second and spends a small part of it.
 */
export const DEFAULT_INVENTORY_BUDGET: Readonly<InventoryBudget> = Object.freeze({
  maxMs: 60_000,
  maxEntries: 1_000_000,
  maxBytes: 256 * 1024 * 1024,
});
