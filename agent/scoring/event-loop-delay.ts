/**
 * The agent's event-loop delay (perf_hooks.monitorEventLoopDelay), so "training and inference do
 * not stall the agent" is a number: the p99 since start, in milliseconds.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from "node:perf_hooks";

export class EventLoopDelay {
  private h: IntervalHistogram | undefined;

  /** `resolutionMs`: the sampling timer's period (default 10 ms; the delay is measured against it). */
  start(resolutionMs = 10): void {
    if (this.h !== undefined) return;
    this.h = monitorEventLoopDelay({ resolution: resolutionMs });
    this.h.enable();
  }

  stop(): void {
    this.h?.disable();
  }

  /** The 99th percentile of the delay since start, ms (0 before any sample). */
  p99Ms(): number {
    const h = this.h;
    if (h === undefined || h.count === 0) return 0;
    return h.percentile(99) / 1e6;
  }
}
