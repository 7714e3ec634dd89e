/**
 * How telemetry looks for people (tables) and machines (JSON with snake_case keys and the named
 * feature vector).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Anomaly, Detection, Gauge, WindowSummary } from "../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { decodeFeatures, namedFeatures } from "../models/features.js";
import { humanBytes, shortLayerId } from "./ldg-format.js";
import { renderTable } from "./table.js";

export function windowSeconds(w: WindowSummary): number {
  if (w.start === undefined || w.end === undefined) return 0;
  return Math.max(0.001, (timestampDate(w.end).getTime() - timestampDate(w.start).getTime()) / 1000);
}

/** A layer's anomaly verdict as JSON (null: no model scored the window). */
export function anomalyJson(a: Anomaly | undefined): Record<string, unknown> | null {
  if (a === undefined) return null;
  return {
    score: a.score,
    alerting: a.alerting,
    generic: a.generic,
    model_version: a.modelVersion,
    masked_features: a.maskedFeatures,
    error: a.error,
    reasons: a.reasons.map((r) => ({ feature: r.feature, sigma: r.sigma, contribution: r.contribution, value: r.value, baseline: r.baseline })),
  };
}

/** The anomaly cell of a table: "82! cpu_seconds.rate" (! while alerting), "-" with no verdict. */
export function anomalyCell(a: Anomaly | undefined): string {
  if (a === undefined) return "-";
  const feature = a.reasons[0]?.feature ?? "";
  return `${Math.round(a.score)}${a.alerting ? "!" : ""}${feature !== "" ? ` ${feature}` : ""}`;
}

const gaugeJson = (g: Gauge | undefined) => (g === undefined || !g.available ? { available: false, reason: g?.reason ?? "" } : g.value);

export function windowJson(w: WindowSummary): Record<string, unknown> {
  return {
    node: w.node,
    container_id: w.containerId,
    container_name: w.containerName,
    start: w.start ? timestampDate(w.start).toISOString() : null,
    end: w.end ? timestampDate(w.end).toISOString() : null,
    ticks: w.ticks,
    feature_version: w.featureVersion,
    layers: w.layers.map((l) => ({
      layer_id: l.layerId,
      layer_name: l.layerName,
      library_layers: l.libraryLayers,
      features: namedFeatures(decodeFeatures(l.featuresF64le)),
      anomaly: anomalyJson(l.anomaly),
    })),
    cgroup: w.cgroup && {
      cpu_seconds: gaugeJson(w.cgroup.cpuSeconds),
      throttled_periods: gaugeJson(w.cgroup.throttledPeriods),
      throttled_seconds: gaugeJson(w.cgroup.throttledSeconds),
      memory_bytes: gaugeJson(w.cgroup.memoryBytes),
      memory_limit_bytes: w.cgroup.memoryUnlimited ? "unlimited" : gaugeJson(w.cgroup.memoryLimitBytes),
      oom_events: gaugeJson(w.cgroup.oomEvents),
      oom_kills: gaugeJson(w.cgroup.oomKills),
      pids: gaugeJson(w.cgroup.pids),
    },
    net: w.net && {
      shared: w.net.shared,
      rx_bytes: gaugeJson(w.net.rxBytes),
      tx_bytes: gaugeJson(w.net.txBytes),
      rx_packets: gaugeJson(w.net.rxPackets),
      tx_packets: gaugeJson(w.net.txPackets),
      tcp_by_state: w.net.tcpByState,
    },
  };
}

export function detectionJson(d: Detection): Record<string, unknown> {
  return {
    id: d.id,
    node: d.node,
    container_id: d.containerId,
    container_name: d.containerName,
    layer_id: d.layerId,
    rule: d.rule,
    reason: d.reason,
    path: d.path,
    pid: d.pid,
    ppid: d.ppid,
    comm: d.comm,
    at: d.at ? timestampDate(d.at).toISOString() : null,
    source: d.source,
  };
}

/** The `top` table: one row per container layer with processes or events, busiest first. */
/** A byte counter per second; "n/a" when the agent could not measure it (sent as NaN, never 0). */
function perSecond(bytes: number, seconds: number): string {
  return Number.isFinite(bytes) ? `${humanBytes(Math.round(bytes / seconds))}/s` : "n/a";
}

export function renderTop(windows: readonly WindowSummary[]): string {
  const rows: Array<{ cpu: number; cells: string[] }> = [];
  for (const w of windows) {
    const s = windowSeconds(w);
    for (const l of w.layers) {
      if (l.processes === 0 && l.execs === 0 && l.driftEvents === 0 && l.cpuSeconds === 0 && l.anomaly === undefined) continue;
      const cpu = (l.cpuSeconds / s) * 100;
      rows.push({
        cpu,
        cells: [
          w.containerName || w.containerId.slice(0, 12),
          shortLayerId(l.layerId),
          (l.layerName || "").slice(0, 36),
          String(l.processes),
          cpu.toFixed(1),
          humanBytes(l.rssBytes),
          perSecond(l.readBytes, s),
          perSecond(l.writeBytes, s),
          String(l.execs),
          String(l.newConnections),
          l.driftEvents > 0 ? String(l.driftEvents) : "-",
          anomalyCell(l.anomaly),
        ],
      });
    }
  }
  rows.sort((a, b) => b.cpu - a.cpu);
  return renderTable(["CONTAINER", "LAYER", "NAME", "PROCS", "CPU%", "RSS", "READ", "WRITE", "EXECS", "CONNS", "DRIFT", "ANOMALY"], rows.map((r) => r.cells));
}

export function renderDetections(ds: readonly Detection[]): string {
  return renderTable(
    ["TIME", "CONTAINER", "LAYER", "REASON", "PID", "PATH", "SOURCE"],
    ds.map((d) => [d.at ? timestampDate(d.at).toISOString().slice(0, 19) : "", d.containerName || d.containerId.slice(0, 12), shortLayerId(d.layerId), d.reason, String(d.pid), d.path, d.source]),
  );
}
