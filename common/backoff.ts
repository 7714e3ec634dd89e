/** Exponential backoff with full jitter, so many agents do not reconnect in lockstep. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly minMs = 250,
    private readonly maxMs = 10_000,
  ) {}

  next(): number {
    const cap = Math.min(this.maxMs, this.minMs * 2 ** this.attempt);
    this.attempt++;
    return Math.round(this.minMs / 2 + Math.random() * (cap - this.minMs / 2));
  }

  reset(): void {
    this.attempt = 0;
  }
}
