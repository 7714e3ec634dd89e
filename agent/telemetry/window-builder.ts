/**
 * Builds the windows: per container, one LayerWindow per layer that had a live process or an exec
 * event, and the cgroup and network samples at the window's edges; at the window's end, one
 * WindowSummary per container (models/FEATURES.md). No I/O: the sampler and the exec tracker feed
 * it, the telemetry emits what it returns.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { GaugeSchema, LayerFeaturesSchema, WindowSummarySchema, type CgroupFeatures, type Gauge, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { encodeFeatures, FEATURE_VERSION, featureIndex, type CountName } from "../../models/features.js";
import type { LdgCollector } from "../layers/ldg-collector.js";
import type { CgroupSample } from "./cgroup-sampler.js";
import { cgroupFeatures, netFeatures } from "./container-context.js";
import { LayerWindow, type MetricVector } from "./layer-window.js";
import type { NetSample } from "./net-sampler.js";

/** The vector entries LayerFeatures repeats as plain fields (for tables and queries). */
const CPU_SECONDS = featureIndex("cpu_seconds.sum");
const RSS_BYTES = featureIndex("rss_bytes.max");
const READ_BYTES = featureIndex("read_bytes.sum");
const WRITE_BYTES = featureIndex("write_bytes.sum");
const PROCESSES = featureIndex("process_count");

/** A layer's totals at one tick: its processes' metric vectors summed, and how many there were. */
export interface LayerTick {
  v: MetricVector;
  n: number;
}

interface ContainerWindow {
  layers: Map<string, LayerWindow>;
  cgroupFirst: CgroupSample | undefined;
  cgroupLast: CgroupSample | undefined;
  cgroupVersion: string;
  netFirst: NetSample | undefined;
  netLast: NetSample | undefined;
  /** Counts that could not be measured for any of the container's layers this window (e.g. socket table unreadable). */
  unavailableCounts: Set<CountName>;
  exitsCharged: number;
}

/**
 * The share of the cgroup's CPU time in the window that reached a layer, capped at 1 (a process
 * charged at exit early in a window may have run at the end of the previous one).
 */
export function cpuAttributedShare(layersCpuSeconds: number, cgroup: CgroupFeatures | undefined): Gauge {
  const cg = cgroup?.cpuSeconds;
  if (cg === undefined || !cg.available) return create(GaugeSchema, { available: false, reason: `cgroup CPU unavailable: ${cg?.reason || "not sampled"}` });
  if (!(cg.value > 0)) return create(GaugeSchema, { available: false, reason: "the cgroup's CPU counter did not move in the window" });
  return create(GaugeSchema, { available: true, value: Math.min(1, Math.max(0, layersCpuSeconds / cg.value)) });
}

export interface WindowBuilderOptions {
  node: string;
  /** Window length, ms. */
  windowMs: number;
  /** Sampling tick, ms: a window ends at the tick nearest its length. */
  tickMs: number;
  /** Names of containers and layers for the summaries. */
  names: Pick<LdgCollector, "container" | "layerName">;
}

export class WindowBuilder {
  private readonly containers = new Map<string, ContainerWindow>();
  private start = new Date();
  private ticks = 0;
  /** When the window's first and latest ticks sampled (ms), for gauges' growth per second. */
  private firstTickAt = 0;
  private lastTickAt = 0;

  constructor(private readonly o: WindowBuilderOptions) {}

  /** Starts the current window at `now` (when sampling starts). */
  begin(now: Date): void {
    this.start = now;
  }

  /** The window of one of a container's layers; a layer first seen late counts the ticks before as empty. */
  layer(containerId: string, layerId: string): LayerWindow {
    return this.layerOf(this.container(containerId), layerId);
  }

  /** One tick's totals for a container's layers; its other layers get an empty tick. */
  addTick(containerId: string, totals: ReadonlyMap<string, LayerTick>): void {
    const c = this.container(containerId);
    const firstTickOfWindow = this.ticks === 0;
    for (const [layerId, t] of totals) this.layerOf(c, layerId).addTick(t.v, t.n, firstTickOfWindow);
    for (const [layerId, w] of c.layers) if (!totals.has(layerId) && w.tickCount < this.ticks + 1) w.addEmptyTick();
  }

  addCgroup(containerId: string, s: CgroupSample, version: string): void {
    const c = this.container(containerId);
    if (c.cgroupFirst === undefined) c.cgroupFirst = s;
    c.cgroupLast = s;
    c.cgroupVersion = version;
  }

  addNet(containerId: string, s: NetSample): void {
    const c = this.container(containerId);
    if (c.netFirst === undefined) c.netFirst = s;
    c.netLast = s;
  }

  /** Ends and forgets the containers not in `live` (stopped or removed): their last, partial windows. */
  endGone(live: ReadonlySet<string>, now: Date): WindowSummary[] {
    const out: WindowSummary[] = [];
    for (const [id, c] of [...this.containers]) {
      if (live.has(id)) continue;
      out.push(this.end(id, this.o.names.container(id)?.name ?? "", c, now));
      this.containers.delete(id);
    }
    return out;
  }

  /** Counts a tick, sampled at `at`, once every container was sampled. */
  endTick(at: Date): void {
    if (this.ticks === 0) this.firstTickAt = at.getTime();
    this.lastTickAt = at.getTime();
    this.ticks++;
  }

  /** A count could not be measured for the container in this window: NaN for every one of its layers. */
  countUnavailable(containerId: string, name: CountName): void {
    this.container(containerId).unavailableCounts.add(name);
  }

  /** A process's totals were charged at its exit in this window. */
  exitCharged(containerId: string): void {
    this.container(containerId).exitsCharged++;
  }

  /** Whether the window is over at `now` (within half a tick). */
  due(now: Date): boolean {
    return now.getTime() - this.start.getTime() >= this.o.windowMs - this.o.tickMs / 2;
  }

  /** Ends the window of each listed container (in that order) and starts the next window at `now`. */
  flush(running: readonly { id: string; name: string }[], now: Date): WindowSummary[] {
    const batch: WindowSummary[] = [];
    for (const r of running) {
      const c = this.containers.get(r.id);
      if (c !== undefined) batch.push(this.end(r.id, r.name, c, now));
    }
    this.start = now;
    this.ticks = 0;
    return batch;
  }

  private container(id: string): ContainerWindow {
    let c = this.containers.get(id);
    if (c === undefined) {
      c = { layers: new Map(), cgroupFirst: undefined, cgroupLast: undefined, cgroupVersion: "", netFirst: undefined, netLast: undefined, unavailableCounts: new Set(), exitsCharged: 0 };
      this.containers.set(id, c);
    }
    return c;
  }

  private layerOf(c: ContainerWindow, layerId: string): LayerWindow {
    let w = c.layers.get(layerId);
    if (w === undefined) {
      w = new LayerWindow();
      for (let i = 0; i < this.ticks; i++) w.addEmptyTick();
      c.layers.set(layerId, w);
    }
    return w;
  }

  private end(id: string, name: string, c: ContainerWindow, end: Date): WindowSummary {
    const seconds = Math.max(0.001, (end.getTime() - this.start.getTime()) / 1000);
    const sampledSeconds = (this.lastTickAt - this.firstTickAt) / 1000;
    const layers = [];
    let layersCpu = 0;
    for (const [layerId, w] of c.layers) {
      for (const name of c.unavailableCounts) w.countUnavailable(name);
      const f = w.features(this.ticks, seconds, sampledSeconds);
      layersCpu += f[CPU_SECONDS] ?? 0;
      layers.push(
        create(LayerFeaturesSchema, {
          layerId,
          layerName: this.o.names.layerName(id, layerId),
          featuresF64le: encodeFeatures(f),
          libraryLayers: [...w.libraryLayers],
          cpuSeconds: f[CPU_SECONDS] ?? 0,
          rssBytes: f[RSS_BYTES] ?? 0,
          readBytes: f[READ_BYTES] ?? 0,
          writeBytes: f[WRITE_BYTES] ?? 0,
          processes: Math.round(f[PROCESSES] ?? 0),
          execs: w.counts.exec_count,
          newConnections: w.counts.new_connections,
          driftEvents: w.counts.drift_events,
        }),
      );
    }
    const cgroup = cgroupFeatures(c.cgroupFirst, c.cgroupLast, c.cgroupVersion);
    const summary = create(WindowSummarySchema, {
      node: this.o.node,
      containerId: id,
      containerName: name,
      start: timestampFromDate(this.start),
      end: timestampFromDate(end),
      ticks: this.ticks,
      featureVersion: FEATURE_VERSION,
      layers,
      cgroup,
      net: netFeatures(c.netFirst, c.netLast),
      cpuAttributedShare: cpuAttributedShare(layersCpu, cgroup),
      exitsCharged: c.exitsCharged,
    });
    // The next window starts where this one ended.
    c.layers = new Map();
    c.unavailableCounts = new Set();
    c.exitsCharged = 0;
    c.cgroupFirst = c.cgroupLast;
    c.netFirst = c.netLast;
    return summary;
  }
}
