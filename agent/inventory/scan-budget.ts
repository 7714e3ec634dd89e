/**
 * What reading one image's inventory may cost, all its layers together, and the running count of
 * it. A hostile image (a million node_modules entries, a huge status file) must not cost the node
 * its agent: past any part of the budget the search and reads stop and the inventory is partial,
 * with the reason. The work also yields to the event loop every few milliseconds, so sampling and
 * the link keep their turns while an image is read.
 */
import { setImmediate as nextTurn } from "node:timers/promises";
import type { InventoryBudget } from "./inventory-budget.js";

/** Work done between two turns given back to the event loop. */
const SLICE_MS = 5;

export class ScanBudget {
  private entries = 0;
  private bytes = 0;
  private readonly started = performance.now();
  private lastTurn = performance.now();
  private entriesSpent: string | undefined;
  private readsSpent: string | undefined;

  constructor(
    readonly limits: InventoryBudget,
    private readonly signal?: AbortSignal,
  ) {}

  /** Why the budget is spent, once any part of it is. */
  get spent(): string | undefined {
    return this.readsSpent ?? this.entriesSpent;
  }

  /** Counts `n` entries; false once the search may go no further. */
  spendEntries(n: number): boolean {
    this.entries += n;
    if (this.entries > this.limits.maxEntries) this.entriesSpent ??= `per-image budget of ${this.limits.maxEntries} directory entries spent`;
    return this.maySearch();
  }

  /** Counts bytes read. */
  spendBytes(n: number): void {
    this.bytes += n;
  }

  /** The search may go on: no part of the budget is spent (the clock included). */
  maySearch(): boolean {
    return this.mayRead() && this.entriesSpent === undefined;
  }

  /**
   * Databases already found may still be read: bytes and time are left (the entries are the
   * search's; what it found before they ran out is worth reading).
   */
  mayRead(): boolean {
    if (this.readsSpent !== undefined) return false;
    const { maxMs, maxBytes } = this.limits;
    if (this.signal?.aborted === true) this.readsSpent = "stopped: the agent is stopping";
    else if (this.bytes > maxBytes) this.readsSpent = `per-image budget of ${maxBytes} database bytes spent`;
    else if (performance.now() - this.started >= maxMs) this.readsSpent = `per-image budget of ${maxMs} ms spent`;
    return this.readsSpent === undefined;
  }

  /** Gives the event loop a turn when this work has held it for a slice. */
  async pace(): Promise<void> {
    if (performance.now() - this.lastTurn < SLICE_MS) return;
    await nextTurn();
    this.lastTurn = performance.now();
  }
}
