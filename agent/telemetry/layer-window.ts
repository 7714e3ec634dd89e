/**
 * Per-layer window accumulators: each tick adds the layer's per-process totals; the window's end
 * turns them into the feature vector of models/features.ts (sum/mean/max/rate per metric, then
 * counts). Pure arithmetic, no I/O, so the rules of FEATURES.md are tested here directly. A feature
 * the agent could not measure in the window is NaN (unavailable), never a 0 that reads as idle.
 */
import { COUNTS, FEATURE_COUNT, METRICS, STATS, type CountName } from "../../models/features.js";

export const METRIC_COUNT = METRICS.length;
const IS_GAUGE = METRICS.map((m) => m.kind === "gauge");

/** One process's contribution at one tick: counter deltas and gauge values, in METRICS order. */
export type MetricVector = Float64Array;

export function emptyMetrics(): MetricVector {
  return new Float64Array(METRIC_COUNT);
}

export class LayerWindow {
  private readonly sum = new Float64Array(METRIC_COUNT);
  private readonly max = new Float64Array(METRIC_COUNT);
  private readonly first = new Float64Array(METRIC_COUNT);
  private readonly last = new Float64Array(METRIC_COUNT);
  private ticks = 0;
  private processTicks = 0;
  readonly counts: Record<CountName, number> = { process_count: 0, process_starts: 0, exec_count: 0, new_connections: 0, drift_events: 0, listen_sockets: 0 };
  readonly libraryLayers = new Set<string>();
  /** Metrics (METRICS indices) and counts that could not be measured for the layer in this window. */
  private readonly unavailableMetrics = new Set<number>();
  private readonly unavailableCounts = new Set<CountName>();

  /** A metric of one of the layer's processes could not be read this window: its 4 features become NaN. */
  metricUnavailable(metric: number): void {
    this.unavailableMetrics.add(metric);
  }

  countUnavailable(name: CountName): void {
    this.unavailableCounts.add(name);
  }

  /**
   * Adds one tick's totals for the layer (`total` summed over its live processes). A layer that
   * joins a window late has had zeros before (its `first` stays 0), so gauges' rates show growth.
   */
  addTick(total: MetricVector, processes: number, firstTickOfWindow: boolean): void {
    for (let i = 0; i < METRIC_COUNT; i++) {
      const v = total[i] ?? 0;
      this.sum[i] = (this.sum[i] ?? 0) + v;
      if (v > (this.max[i] ?? 0)) this.max[i] = v;
      if (firstTickOfWindow && this.ticks === 0) this.first[i] = v;
      this.last[i] = v;
    }
    this.ticks++;
    this.processTicks += processes;
  }

  /** A tick where the layer had no live process (keeps means and the last gauge honest). */
  addEmptyTick(): void {
    this.last.fill(0);
    this.ticks++;
  }

  get tickCount(): number {
    return this.ticks;
  }

  /**
   * The feature vector. `windowTicks` is the number of ticks in the window (a layer seen in only
   * some of them counts zeros for the rest); `seconds` its length; `sampledSeconds` the time
   * between its first and last ticks' samples, over which gauges' growth is measured (NaN rates
   * when the window has a single sample).
   */
  features(windowTicks: number, seconds: number, sampledSeconds: number): number[] {
    const n = Math.max(1, windowTicks);
    const s = seconds > 0 ? seconds : 1;
    const out: number[] = [];
    for (let i = 0; i < METRIC_COUNT; i++) {
      if (this.unavailableMetrics.has(i)) {
        for (let k = 0; k < STATS.length; k++) out.push(Number.NaN);
        continue;
      }
      const sum = this.sum[i] ?? 0;
      const max = this.max[i] ?? 0;
      if (IS_GAUGE[i]) {
        const last = this.last[i] ?? 0;
        const growth = windowTicks > 1 && sampledSeconds > 0 ? (last - (this.first[i] ?? 0)) / sampledSeconds : Number.NaN;
        out.push(last, sum / n, max, growth);
      } else {
        out.push(sum, sum / n, max, sum / s);
      }
    }
    const counts = { ...this.counts, process_count: this.processTicks / n };
    for (const c of COUNTS) out.push(this.unavailableCounts.has(c.name) ? Number.NaN : counts[c.name]);
    if (out.length !== FEATURE_COUNT) throw new Error(`feature vector has ${out.length} entries, expected ${FEATURE_COUNT}`);
    return out;
  }
}
