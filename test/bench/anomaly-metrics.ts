/**
 * The anomaly benchmark's bookkeeping, pure (no I/O): the recorded layer-windows, the ground-truth
 * labelling rule, and the detection figures (precision, recall and F1 without point adjustment,
 * false positives per 1,000 normal windows, detection latency in windows). ANOMALY-BENCH.md states
 * the same rules in words.
 */

/** One (container, layer) window as recorded from the agent's telemetry. */
export interface LayerWindowRecord {
  container: string;
  containerId: string;
  layerId: string;
  layerName: string;
  /** ms since epoch. */
  start: number;
  end: number;
  seconds: number;
  vector: number[];
}

/** One container window: what the cgroup CPU share is computed from. */
export interface ContainerWindowRecord {
  container: string;
  start: number;
  end: number;
  /** The cgroup's CPU seconds in the window; null when unavailable. */
  cgroupCpuS: number | null;
  /** Σ over the window's layers of cpu_seconds.sum. */
  layerCpuS: number;
  /** The telemetry's own `cpu_attributed_share` when it sends one (null when absent/unavailable). */
  reportedShare: number | null;
}

/** One injection as it ran: where, when, and which layers its processes were attributed to. */
export interface InjectionRecord {
  name: string;
  container: string;
  /** The layers labelled positive: the one providing the injection's executable. */
  layers: string[];
  declaredLayer: string;
  /** Layers the telemetry attributed the injection's process tree to while it ran (sampled every 250 ms). */
  observedLayers: string[];
  t0: number;
  t1: number;
  exitCode: number | null;
}

/** labelWindows' value for a window left out of the scoring (see labelWindows). */
export const EXCLUDED = -2;

/**
 * The labelling rule: a layer-window is positive when it belongs to the injected container, to the
 * injection's layer (the one providing the executable all its processes run) and its
 * [start, end] overlaps the injection's [t0, t1]. Windows of another layer the injection's process
 * tree was also seen in (docker exec's runc init, whose executable is the host's, is attributed to
 * the writable layer for a tick) that overlap the injection are left out of the scoring
 * (EXCLUDED): caused by the injection, but not where it ran. Every other window (the container's
 * other layers during the injection included) is normal. Returns, per window, the index of its
 * injection, -1 for normal, or EXCLUDED.
 */
export function labelWindows(windows: readonly LayerWindowRecord[], injections: readonly InjectionRecord[]): number[] {
  return windows.map((w) => {
    const overlapping = (inj: InjectionRecord) => inj.container === w.container && w.start < inj.t1 && w.end > inj.t0;
    const k = injections.findIndex((inj) => overlapping(inj) && inj.layers.includes(w.layerId));
    if (k >= 0) return k;
    return injections.some((inj) => overlapping(inj) && inj.observedLayers.includes(w.layerId)) ? EXCLUDED : -1;
  });
}

export interface Detection {
  tp: number;
  fp: number;
  fn: number;
  tn: number;
  precision: number;
  recall: number;
  f1: number;
  fp_per_1000: number;
}

/** Window-by-window counts, no point adjustment: each window is judged on its own alarm. */
export function detection(positive: readonly boolean[], alarm: readonly boolean[]): Detection {
  if (positive.length !== alarm.length) throw new Error(`${positive.length} labels for ${alarm.length} alarms`);
  let tp = 0;
  let fp = 0;
  let fn = 0;
  let tn = 0;
  for (let i = 0; i < positive.length; i++) {
    if (positive[i]) {
      if (alarm[i]) tp++;
      else fn++;
    } else if (alarm[i]) fp++;
    else tn++;
  }
  const precision = tp + fp === 0 ? 0 : tp / (tp + fp);
  const recall = tp + fn === 0 ? 0 : tp / (tp + fn);
  const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  const normals = fp + tn;
  return { tp, fp, fn, tn, precision, recall, f1, fp_per_1000: normals === 0 ? 0 : (1000 * fp) / normals };
}

export interface InjectionLatency {
  name: string;
  /** Positive windows of the injection. */
  windows: number;
  /** 0-based index (in time order) of its first alarmed window; null when none was. */
  firstDetected: number | null;
  /** firstDetected, or `windows` for an undetected injection. */
  latency: number;
  recall: number;
}

/**
 * Detection latency per injection: its positive windows in time order (of the injected layer, so
 * windows of one stream), the index of the first alarmed one (0 = the first window of the
 * injection). An injection never detected counts as its length in windows.
 */
export function latencies(windows: readonly LayerWindowRecord[], label: readonly number[], alarm: readonly boolean[], injections: readonly InjectionRecord[]): InjectionLatency[] {
  return injections.map((inj, k) => {
    const idx = windows.map((_, i) => i).filter((i) => label[i] === k);
    idx.sort((a, b) => windows[a]!.start - windows[b]!.start);
    const hit = idx.findIndex((i) => alarm[i]);
    const detected = idx.filter((i) => alarm[i]).length;
    return {
      name: inj.name,
      windows: idx.length,
      firstDetected: hit < 0 ? null : hit,
      latency: hit < 0 ? idx.length : hit,
      recall: idx.length === 0 ? 0 : detected / idx.length,
    };
  });
}

/** Share (0-1) of a window's length its injection covered. */
export function coverage(w: Pick<LayerWindowRecord, "start" | "end">, inj: Pick<InjectionRecord, "t0" | "t1">): number {
  const len = w.end - w.start;
  return len <= 0 ? 0 : Math.max(0, Math.min(w.end, inj.t1) - Math.max(w.start, inj.t0)) / len;
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/**
 * Splits the baseline (time-ordered) into the windows the detectors are fitted on and the held-out
 * windows their thresholds are calibrated on: every `every`-th window is held out, so both sets
 * span the whole baseline (every phase of the load's sine).
 */
export function splitBaseline<T>(ordered: readonly T[], every: number): { fit: T[]; heldOut: T[]; heldOutIdx: number[] } {
  const fit: T[] = [];
  const heldOut: T[] = [];
  const heldOutIdx: number[] = [];
  ordered.forEach((w, i) => {
    if (i % every === every - 1) {
      heldOut.push(w);
      heldOutIdx.push(i);
    } else fit.push(w);
  });
  return { fit, heldOut, heldOutIdx };
}

/** The key EWMA streams are kept by: one stream per (container, layer). */
export function streamKey(w: Pick<LayerWindowRecord, "container" | "layerId">): string {
  return `${w.container}|${w.layerId}`;
}
