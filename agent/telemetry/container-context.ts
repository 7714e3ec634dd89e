/**
 * A window's container context (not in the layer vector, models/FEATURES.md): the cgroup's and the
 * network namespace's figures between the window's first and last samples. A figure the host
 * cannot give is sent as unavailable with its reason, never as 0.
 */
import { create } from "@bufbuild/protobuf";
import { CgroupFeaturesSchema, GaugeSchema, NetFeaturesSchema, type CgroupFeatures, type Gauge, type NetFeatures } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { CgroupSample } from "./cgroup-sampler.js";
import type { NetSample } from "./net-sampler.js";

function gauge(v: number | null | undefined, reason: string | undefined): Gauge {
  return v === null || v === undefined || !Number.isFinite(v)
    ? create(GaugeSchema, { available: false, reason: reason ?? "not sampled" })
    : create(GaugeSchema, { available: true, value: v });
}

function delta(a: number | null | undefined, b: number | null | undefined): number | null {
  return a === null || a === undefined || b === null || b === undefined ? null : Math.max(0, b - a);
}

/** The cgroup's figures over a window: counters as the increase from `first` to `last`, gauges as `last`. */
export function cgroupFeatures(first: CgroupSample | undefined, last: CgroupSample | undefined, version = ""): CgroupFeatures {
  if (last === undefined) {
    const no = gauge(null, "cgroup not found for the container");
    return create(CgroupFeaturesSchema, { version: "", cpuSeconds: no, throttledPeriods: no, throttledSeconds: no, memoryBytes: no, memoryLimitBytes: no, oomEvents: no, oomKills: no, pids: no });
  }
  const f = first ?? last;
  const why = (k: string) => last.unavailable[k];
  const cpu = delta(f.cpuUsageNs, last.cpuUsageNs);
  const thrNs = delta(f.cpuThrottledNs, last.cpuThrottledNs);
  return create(CgroupFeaturesSchema, {
    version,
    cpuSeconds: gauge(cpu === null ? null : cpu / 1e9, why("cpuUsageNs")),
    throttledPeriods: gauge(delta(f.cpuThrottledPeriods, last.cpuThrottledPeriods), why("cpuThrottledPeriods")),
    throttledSeconds: gauge(thrNs === null ? null : thrNs / 1e9, why("cpuThrottledNs")),
    memoryBytes: gauge(last.memoryBytes, why("memoryBytes")),
    memoryLimitBytes: gauge(last.memoryLimitBytes, why("memoryLimitBytes") ?? (last.memoryUnlimited ? "unlimited" : undefined)),
    memoryUnlimited: last.memoryUnlimited,
    oomEvents: gauge(delta(f.oomEvents, last.oomEvents), why("oomEvents")),
    oomKills: gauge(delta(f.oomKills, last.oomKills), why("oomKills")),
    pids: gauge(last.pidsCurrent, why("pidsCurrent")),
  });
}

/** The network namespace's figures over a window; a host-network container's are marked shared. */
export function netFeatures(first: NetSample | undefined, last: NetSample | undefined): NetFeatures {
  if (last === undefined) {
    const no = gauge(null, "network namespace not sampled");
    return create(NetFeaturesSchema, { shared: false, rxBytes: no, txBytes: no, rxPackets: no, txPackets: no });
  }
  if (last.shared) {
    // The host's counters: not this container's traffic.
    const shared = gauge(null, "host network namespace: counters are the host's, not attributed");
    return create(NetFeaturesSchema, { shared: true, rxBytes: shared, txBytes: shared, rxPackets: shared, txPackets: shared });
  }
  const f = first ?? last;
  const tcp: Record<string, number> = {};
  for (const [k, v] of Object.entries(last.tcpByState)) if (v > 0) tcp[k] = v;
  return create(NetFeaturesSchema, {
    shared: false,
    rxBytes: gauge(delta(f.rxBytes, last.rxBytes), last.unavailable["rxBytes"]),
    txBytes: gauge(delta(f.txBytes, last.txBytes), last.unavailable["txBytes"]),
    rxPackets: gauge(delta(f.rxPackets, last.rxPackets), last.unavailable["rxPackets"]),
    txPackets: gauge(delta(f.txPackets, last.txPackets), last.unavailable["txPackets"]),
    tcpByState: tcp,
  });
}
