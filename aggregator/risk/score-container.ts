/**
 * One container's scores from what is known of it: per layer the threat of its vulnerabilities,
 * its drift and the anomaly model's latest verdict, merged into risk, and the decision of its environment's policy. Each score
 * carries its reasons (advisory ids, the drift's time) and its caveats (what is not known yet).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import {
  ContainerScoresSchema,
  LayerScoreSchema,
  ScoreReasonSchema,
  type ContainerScores,
  type ImageInventory,
  type Policy,
  type ScoreReason,
  type VulnMatch,
} from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { ImageMatchResult } from "../vulns/image-matches.js";
import { aggregateThreat, anomalyDetail, anomalyTerm, driftScore, riskScore, round1, type AnomalyFacts } from "../vulns/scoring.js";

/** Reasons listed per layer (the riskiest first); the count of all is in `vulns`. */
const MAX_REASONS = 10;

export interface ContainerFacts {
  graph: LayerGraph;
  /** Undefined until the agent has reported the image's packages. */
  inventory: ImageInventory | undefined;
  matches: ImageMatchResult | undefined;
  /** False when no feed has loaded an advisory: a threat of 0 then means nothing. */
  feedsLoaded: boolean;
  /** The latest drift detection per layer id. */
  drift: ReadonlyMap<string, Date> | undefined;
  /** The latest anomaly verdict per layer id, with until when it counts. */
  anomaly?: ReadonlyMap<string, LayerAnomaly> | undefined;
  policy: Policy;
  now: Date;
}

/** A layer's latest anomaly verdict (from its newest scored window). */
export interface LayerAnomaly {
  anomaly: AnomalyFacts;
  /** Past this the verdict is stale: has_anomaly false, as if no model scored the layer. */
  freshUntil: Date;
}

export function scoreContainer(f: ContainerFacts): ContainerScores {
  const { graph: g, inventory: inv, matches: m, now, policy } = f;
  const caveats: string[] = [];
  if (inv === undefined) caveats.push("no inventory of this image yet: threat is 0 until the agent reports its packages");
  else {
    for (const p of inv.partial) caveats.push(`partial inventory: ${p.path} in layer ${p.layerId.slice(0, 19)}: ${p.reason}`);
    if (m !== undefined && m.problems.unknownEcosystem > 0) caveats.push(`${m.problems.unknownEcosystem} packages of an unknown distribution release were not matched`);
    if (m !== undefined && m.problems.unparseableVersion > 0) caveats.push(`${m.problems.unparseableVersion} package versions could not be parsed (${m.problems.samples.slice(0, 3).join("; ")})`);
  }
  if (!f.feedsLoaded) caveats.push("no vulnerability feed is loaded (aggregator --feed osv=…)");
  const byLayer = new Map<string, VulnMatch[]>();
  for (const v of m?.matches ?? []) {
    let l = byLayer.get(v.layerId);
    if (l === undefined) byLayer.set(v.layerId, (l = []));
    l.push(v);
  }
  const layers = g.layers.map((l) => {
    const vulns = byLayer.get(l.layerId) ?? [];
    const threat = aggregateThreat(vulns.map((v) => v.threat));
    const latest = f.drift?.get(l.layerId);
    const d = driftScore(latest, now);
    const reasons: ScoreReason[] = vulns.slice(0, MAX_REASONS).map((v) => create(ScoreReasonSchema, { kind: "vuln", id: v.id, value: round3(v.threat), detail: vulnDetail(v) }));
    const seen = f.anomaly?.get(l.layerId);
    const fresh = seen !== undefined && now <= seen.freshUntil ? seen.anomaly : undefined;
    const a = anomalyTerm(fresh);
    if (fresh !== undefined && a > 0) {
      reasons.unshift(create(ScoreReasonSchema, { kind: "anomaly", id: fresh.reasons[0]?.feature || "anomaly", value: round3(a / 100), detail: anomalyDetail(fresh) }));
    }
    if (d > 0 && latest !== undefined) {
      reasons.unshift(create(ScoreReasonSchema, { kind: "drift", id: "drift", value: d / 100, detail: `executable not from any image layer run at ${latest.toISOString()}` }));
    }
    return create(LayerScoreSchema, {
      layerId: l.layerId,
      layerName: l.name,
      threat,
      // The model's score is shown whenever a fresh one exists; only an alerting one counts in risk.
      anomaly: fresh === undefined ? 0 : round1(Math.min(100, Math.max(0, Number.isFinite(fresh.score) ? fresh.score : 0))),
      hasAnomaly: fresh !== undefined,
      drift: d,
      risk: riskScore(threat, fresh === undefined ? undefined : a, d),
      vulns: vulns.length,
      reasons,
    });
  });
  const risk = Math.max(0, ...layers.map((l) => l.risk));
  const threat = Math.max(0, ...layers.map((l) => l.threat));
  return create(ContainerScoresSchema, {
    containerId: g.containerId,
    containerName: g.containerName,
    node: g.node,
    image: g.image,
    policy,
    layers,
    risk,
    threat,
    rebuild: risk >= policy.rebuildThreshold,
    switch: risk >= policy.switchThreshold,
    vulns: m?.matches.length ?? 0,
    computedAt: timestampFromDate(now),
    caveats,
  });
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** A vulnerability as one line of a score's reasons: package, fix, CVSS and exploit facts. */
function vulnDetail(v: VulnMatch): string {
  const parts = [`${v.package} ${v.installedVersion}${v.fixedVersion !== "" ? ` (fixed in ${v.fixedVersion})` : " (no fix)"}`];
  parts.push(v.cvssSource === "default" ? "CVSS unknown (5.0 assumed)" : `CVSS ${v.cvss.toFixed(1)} (${v.cvssSource})`);
  if (v.kev) parts.push(v.kevRansomware ? "KEV, ransomware" : "KEV");
  else parts.push(v.hasEpss ? `EPSS ${v.epss.toFixed(3)}` : "no EPSS");
  return parts.join(", ");
}
