/**
 * The baseline windows kept for training a model: a ring of the latest `max` model inputs, each
 * vector copied into a Float64Array of its own (a window's decoded vector is not kept alive).
 */
import type { ModelInput } from "../../models/types.js";

export class BaselineBuffer {
  private readonly rows: ModelInput[] = [];
  private next = 0;
  /** When the first window arrived (ms), for the warm-up. */
  readonly firstSeen: number;
  /** When a failed training may be tried again (ms). */
  retryAt = 0;

  constructor(
    private readonly max: number,
    now: number,
  ) {
    this.firstSeen = now;
  }

  get size(): number {
    return this.rows.length;
  }

  push(x: ModelInput): void {
    const row: ModelInput = { vector: Float64Array.from(x.vector, Number), seconds: x.seconds };
    if (this.rows.length < this.max) this.rows.push(row);
    else this.rows[this.next] = row;
    this.next = (this.next + 1) % this.max;
  }

  /** The windows kept, oldest first. */
  inputs(): ModelInput[] {
    return this.rows.length < this.max ? [...this.rows] : [...this.rows.slice(this.next), ...this.rows.slice(0, this.next)];
  }
}
