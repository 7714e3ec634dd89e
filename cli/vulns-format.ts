/**
 * Threat output: score and vulnerability tables, feed status (the SBOM is in sbom.ts).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { GetVulnsResponse } from "../proto/gen/shadowlayer/v1/query_pb.js";
import type { ContainerScores, FeedStatus, Policy, VulnMatch } from "../proto/gen/shadowlayer/v1/vulns_pb.js";
import { shortLayerId } from "./ldg-format.js";
import { renderTable } from "./table.js";

export function scoresJson(s: ContainerScores): Record<string, unknown> {
  return {
    container_id: s.containerId,
    container_name: s.containerName,
    node: s.node,
    image: s.image,
    risk: s.risk,
    threat: s.threat,
    vulns: s.vulns,
    rebuild: s.rebuild,
    switch: s.switch,
    policy: s.policy && policyJson(s.policy),
    computed_at: s.computedAt ? timestampDate(s.computedAt).toISOString() : null,
    caveats: s.caveats,
    layers: s.layers.map((l) => ({
      layer_id: l.layerId,
      layer_name: l.layerName,
      risk: l.risk,
      threat: l.threat,
      drift: l.drift,
      anomaly: l.hasAnomaly ? l.anomaly : null,
      // Only an alerting verdict counts in risk (it then has an `anomaly` reason naming the feature).
      anomaly_alerting: l.reasons.some((r) => r.kind === "anomaly"),
      vulns: l.vulns,
      reasons: l.reasons.map((r) => ({ kind: r.kind, id: r.id, value: r.value, detail: r.detail })),
    })),
  };
}

export function policyJson(p: Policy): Record<string, unknown> {
  return { name: p.name, labels: p.labels, namespace: p.namespace, rebuild_threshold: p.rebuildThreshold, switch_threshold: p.switchThreshold, order: p.order };
}

function vulnJson(v: VulnMatch): Record<string, unknown> {
  return {
    id: v.id,
    aliases: v.aliases,
    package: v.package,
    package_type: v.packageType,
    installed_version: v.installedVersion,
    fixed_version: v.fixedVersion || null,
    layer_id: v.layerId,
    ecosystem: v.ecosystem,
    advisory_package: v.advisoryPackage,
    cvss: v.cvssSource === "default" ? null : v.cvss,
    cvss_vector: v.cvssVector || null,
    cvss_source: v.cvssSource,
    epss: v.hasEpss ? v.epss : null,
    epss_percentile: v.hasEpss ? v.epssPercentile : null,
    kev: v.kev,
    kev_ransomware: v.kevRansomware,
    threat: v.threat,
    summary: v.summary,
  };
}


/**
 * The container's highest anomaly score among its layers with a fresh verdict ("-": none), with
 * "!" and the feature when the verdict is alerting (then it counts in risk).
 */
function anomalyColumn(s: ContainerScores): string {
  let best: { score: number; feature: string | undefined } | undefined;
  for (const l of s.layers) {
    if (!l.hasAnomaly || (best !== undefined && l.anomaly <= best.score)) continue;
    best = { score: l.anomaly, feature: l.reasons.find((r) => r.kind === "anomaly")?.id };
  }
  if (best === undefined) return "-";
  return best.feature === undefined ? best.score.toFixed(0) : `${best.score.toFixed(0)}! ${best.feature}`;
}

export function renderScores(list: readonly ContainerScores[]): string {
  return renderTable(
    ["CONTAINER", "NODE", "RISK", "THREAT", "ANOMALY", "VULNS", "POLICY", "REBUILD", "SWITCH", "TOP REASON"],
    list.map((s) => {
      const top = [...s.layers].sort((a, b) => b.risk - a.risk)[0];
      const r = top?.reasons[0];
      return [
        s.containerName || s.containerId.slice(0, 12),
        s.node,
        s.risk.toFixed(1),
        s.threat.toFixed(1),
        anomalyColumn(s),
        String(s.vulns),
        `${s.policy?.name ?? "?"} (${s.policy?.rebuildThreshold ?? "?"}/${s.policy?.switchThreshold ?? "?"})`,
        s.rebuild ? "yes" : "-",
        s.switch ? "yes" : "-",
        r === undefined ? (s.caveats[0] ?? "-").slice(0, 60) : `${r.kind === "anomaly" ? r.detail || r.id : r.id} on ${shortLayerId(top?.layerId ?? "")}`,
      ];
    }),
  );
}

/** `vulns --json`: `inventory_status` tells "no vulnerabilities" from "not scanned yet". */
export function vulnsJson(r: GetVulnsResponse): Record<string, unknown> {
  return {
    inventory_status: r.inventoryStatus || "unknown",
    scores: r.scores && scoresJson(r.scores),
    os: r.os && { id: r.os.id, version_id: r.os.versionId },
    packages: r.packages,
    partial: r.partial.map((p) => ({ layer_id: p.layerId, path: p.path, reason: p.reason })),
    vulnerabilities: r.matches.map(vulnJson),
  };
}

/** The table's word on the inventory behind the vulnerabilities (its problems follow as notes). */
export function inventoryLine(r: GetVulnsResponse): string {
  switch (r.inventoryStatus) {
    case "scanned":
      return `inventory: scanned (${r.packages} packages)`;
    case "partial":
      return `inventory: partial (${r.packages} packages; ${r.partial.length} part(s) not read, see notes): vulnerabilities there are not listed`;
    case "pending":
      return "inventory: pending (the agent has not reported this image's packages yet): no vulnerabilities listed does not mean none";
    default:
      return "inventory: unknown (this aggregator does not say)";
  }
}

export function renderVulns(matches: readonly VulnMatch[]): string {
  return renderTable(
    ["ID", "PACKAGE", "INSTALLED", "FIXED", "LAYER", "CVSS", "EPSS", "KEV", "THREAT"],
    matches.map((v) => [
      v.id,
      v.package,
      v.installedVersion,
      v.fixedVersion || "-",
      shortLayerId(v.layerId),
      v.cvssSource === "default" ? "?" : v.cvss.toFixed(1),
      v.hasEpss ? v.epss.toFixed(3) : "-",
      v.kev ? (v.kevRansomware ? "yes+ransom" : "yes") : "-",
      (v.threat * 100).toFixed(1),
    ]),
  );
}

export function feedJson(f: FeedStatus): Record<string, unknown> {
  return {
    name: f.name,
    kind: f.kind,
    source: f.source,
    state: f.state,
    error: f.error || null,
    last_attempt: f.lastAttempt ? timestampDate(f.lastAttempt).toISOString() : null,
    last_success: f.lastSuccess ? timestampDate(f.lastSuccess).toISOString() : null,
    records: Number(f.records),
    accepted: Number(f.accepted),
    rejected: Number(f.rejected),
    rejected_by_reason: Object.fromEntries(Object.entries(f.rejectedByReason).map(([k, v]) => [k, Number(v)])),
    rejected_samples: f.samples,
    dropped_by_reason: Object.fromEntries(Object.entries(f.droppedByReason).map(([k, v]) => [k, Number(v)])),
    age_seconds: f.ageSeconds < 0 ? null : Math.round(f.ageSeconds),
    stale: f.stale,
    demo: f.demo,
  };
}

function age(s: number): string {
  if (s < 0) return "never";
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

/** Rejections by reason, then the parts dropped from kept records, so a feed that lost fields says so. */
function why(f: FeedStatus): string {
  const rejected = Object.entries(f.rejectedByReason).map(([k, v]) => `${k}: ${v}`);
  const dropped = Object.entries(f.droppedByReason).map(([k, v]) => `dropped ${k}: ${v}`);
  return [...rejected, ...dropped].join(", ");
}

/** Said under the table when a demo feed is listed, so its records are not taken for a live source. */
const DEMO_FEED_NOTE = "(demo): fixture records `shadowlayer demo` loaded, a frozen copy of real published advisories, not a live source";

export function renderFeeds(list: readonly FeedStatus[]): string {
  if (list.length === 0) return "no feeds configured (start the aggregator with --feed osv=PATH|URL, --feed kev=…, --feed epss=…, --feed nvd=…; `shadowlayer demo` adds its own)";
  const table = renderTable(
    ["FEED", "KIND", "STATE", "RECORDS", "ACCEPTED", "REJECTED", "AGE", "STALE", "SOURCE", "WHY"],
    list.map((f) => [
      f.demo ? `${f.name} (demo)` : f.name,
      f.kind,
      f.state,
      String(f.records),
      String(f.accepted),
      String(f.rejected),
      age(f.ageSeconds),
      f.stale ? "STALE" : "-",
      f.source,
      f.error !== "" ? f.error.slice(0, 80) : why(f),
    ]),
  );
  return list.some((f) => f.demo) ? `${table}\n${DEMO_FEED_NOTE}` : table;
}
