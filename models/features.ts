/**
 * The per-layer feature vector: the contract between the agent's telemetry windows and the anomaly
 * model. models/FEATURES.md explains every entry; this file is the machine-readable form and the
 * only place the order is defined. Change the order or meaning only with a new FEATURE_VERSION.
 */

export const FEATURE_VERSION = "layer-window-v2";
/**
 * Versions a window may follow. v1 (53 numbers) is v2 without `listen_sockets`, with gauge rates
 * over the window's length instead of the time between the samples, without the CPU and I/O of
 * processes charged at exit, with a reaped child's I/O on its parent's layer, and with 0 where v2
 * writes NaN for a feature not measured: stored v1 windows still decode, no model takes them.
 */
export const KNOWN_FEATURE_VERSIONS = ["layer-window-v1", "layer-window-v2"] as const;

/** Per-process metrics summed over a layer's processes at each tick. */
export const METRICS = [
  { name: "cpu_seconds", kind: "counter", unit: "s", source: "/proc/<pid>/stat utime+stime" },
  { name: "rss_bytes", kind: "gauge", unit: "B", source: "/proc/<pid>/stat rss x page size" },
  { name: "threads", kind: "gauge", unit: "", source: "/proc/<pid>/stat num_threads" },
  { name: "open_fds", kind: "gauge", unit: "", source: "entries of /proc/<pid>/fd" },
  { name: "read_bytes", kind: "counter", unit: "B", source: "/proc/<pid>/io rchar" },
  { name: "write_bytes", kind: "counter", unit: "B", source: "/proc/<pid>/io wchar" },
  { name: "disk_read_bytes", kind: "counter", unit: "B", source: "/proc/<pid>/io read_bytes" },
  { name: "disk_write_bytes", kind: "counter", unit: "B", source: "/proc/<pid>/io write_bytes" },
  { name: "ctx_switches_voluntary", kind: "counter", unit: "", source: "/proc/<pid>/status voluntary_ctxt_switches" },
  { name: "ctx_switches_involuntary", kind: "counter", unit: "", source: "/proc/<pid>/status nonvoluntary_ctxt_switches" },
  { name: "minor_faults", kind: "counter", unit: "", source: "/proc/<pid>/stat minflt" },
  { name: "major_faults", kind: "counter", unit: "", source: "/proc/<pid>/stat majflt" },
] as const;

export type MetricName = (typeof METRICS)[number]["name"];

/** Position of each metric in a per-process metric vector (METRICS order), by name. */
export const METRIC_INDEX: Readonly<Record<MetricName, number>> = Object.fromEntries(METRICS.map((m, i) => [m.name, i])) as Record<MetricName, number>;
export const STATS = ["sum", "mean", "max", "rate"] as const;
export type Stat = (typeof STATS)[number];

/** Counts over the whole window, after the metric block. */
export const COUNTS = [
  { name: "process_count", meaning: "mean number of live processes attributed to the layer per tick" },
  { name: "process_starts", meaning: "processes first seen in the window (new pid + start time), including those charged at exit without ever being sampled (v2)" },
  { name: "exec_count", meaning: "exec events whose executable the layer provides (eBPF: every exec; polling: new or re-exec'd processes seen)" },
  { name: "new_connections", meaning: "non-listening TCP sockets (opened or accepted) first seen in the window owned by the layer's processes" },
  { name: "drift_events", meaning: "drift detections (executable only in the writable layer or a volume) attributed to the layer" },
  { name: "listen_sockets", meaning: "listening TCP sockets first seen in the window owned by the layer's processes (v2)" },
] as const;
export type CountName = (typeof COUNTS)[number]["name"];

export const FEATURE_NAMES: readonly string[] = [
  ...METRICS.flatMap((m) => STATS.map((s) => `${m.name}.${s}`)),
  ...COUNTS.map((c) => c.name),
];

export const FEATURE_COUNT = FEATURE_NAMES.length;

/** Index of a named feature in the vector. */
export function featureIndex(name: string): number {
  const i = FEATURE_NAMES.indexOf(name);
  if (i < 0) throw new RangeError(`unknown feature ${name}`);
  return i;
}

/** A vector as a name -> value record (for JSON output and tests). */
export function namedFeatures(v: readonly number[]): Record<string, number> {
  const out: Record<string, number> = {};
  FEATURE_NAMES.forEach((n, i) => (out[n] = v[i] ?? 0));
  return out;
}

/** Packs a vector as little-endian float64 (the wire form of LayerFeatures.features_f64le). */
export function encodeFeatures(v: readonly number[] | Float64Array): Uint8Array {
  const out = new Uint8Array(v.length * 8);
  const view = new DataView(out.buffer);
  for (let i = 0; i < v.length; i++) view.setFloat64(i * 8, v[i] ?? 0, true);
  return out;
}

/** Unpacks LayerFeatures.features_f64le; a length that is not a multiple of 8 is an error. */
export function decodeFeatures(bytes: Uint8Array): number[] {
  if (bytes.length % 8 !== 0) throw new RangeError(`feature buffer of ${bytes.length} bytes is not a float64 array`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Array<number>(bytes.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(i * 8, true);
  return out;
}
