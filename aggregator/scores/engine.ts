/**
 * Scores every container from what the aggregator knows: its graph (layers), its image's
 * inventory (packages per layer), the vulnerability index (feeds), its drift detections, and the
 * policy of its environment. Recomputed when any of those changes; an image's matches are cached
 * per index generation, so a feed change rescans nothing (inventories are stored).
 */
import { EventEmitter } from "node:events";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Level } from "level";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { Detection } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import {
  ContainerScoresSchema,
  ImageInventorySchema,
  LayerScoreSchema,
  PolicySchema,
  ScoreReasonSchema,
  type ContainerScores,
  type ImageInventory,
  type Policy,
  type ScoreReason,
  type VulnMatch,
} from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { FeedManager } from "../feeds/manager.js";
import type { GraphStore } from "../store/graph-store.js";
import type { TelemetryStore } from "../store/telemetry-store.js";
import { matchInventory, type MatchProblems } from "../vulns/matcher.js";
import { aggregateThreat, driftScore, riskScore } from "../vulns/scoring.js";

export const DEFAULT_POLICY = { name: "default", rebuildThreshold: 60, switchThreshold: 85, order: 1_000_000 } as const;
const NAMESPACE_LABEL = "io.kubernetes.pod.namespace";
const POLICY_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

const invKey = (imageId: string) => `inv!${imageId}`;
const policyKey = (name: string) => `policy!${name}`;

export interface PolicyInit {
  name: string;
  labels?: Record<string, string>;
  namespace?: string;
  rebuild_threshold: number;
  switch_threshold: number;
  order?: number;
}

/** Checks a policy; throws InvalidArgument with the reason. */
export function validatePolicy(p: Policy): Policy {
  if (!POLICY_NAME.test(p.name)) throw new ShadowError(Code.InvalidArgument, `policy name ${JSON.stringify(p.name)} must be lowercase letters, digits, . _ - (max 63)`);
  for (const [k, v] of [
    ["rebuild_threshold", p.rebuildThreshold],
    ["switch_threshold", p.switchThreshold],
  ] as const) {
    if (!Number.isFinite(v) || v < 0 || v > 100) throw new ShadowError(Code.InvalidArgument, `policy ${p.name}: ${k} must be within 0-100, got ${v}`);
  }
  if (p.switchThreshold < p.rebuildThreshold) {
    throw new ShadowError(Code.InvalidArgument, `policy ${p.name}: switch_threshold (${p.switchThreshold}) below rebuild_threshold (${p.rebuildThreshold}) would switch to a shadow that was never built`);
  }
  return p;
}

export function policyFromInit(i: PolicyInit): Policy {
  return validatePolicy(
    create(PolicySchema, {
      name: i.name,
      labels: i.labels ?? {},
      namespace: i.namespace ?? "",
      rebuildThreshold: i.rebuild_threshold,
      switchThreshold: i.switch_threshold,
      order: i.order ?? 100,
    }),
  );
}

function policyMatches(p: Policy, labels: Record<string, string>): boolean {
  if (p.namespace !== "" && labels[NAMESPACE_LABEL] !== p.namespace) return false;
  for (const [k, v] of Object.entries(p.labels)) if (labels[k] !== v) return false;
  return true;
}

export interface ScoreEngineEvents {
  upsert: [ContainerScores];
  delete: [string];
}

export class ScoreEngine extends EventEmitter<ScoreEngineEvents> {
  private readonly inventories = new Map<string, ImageInventory>();
  private readonly policies = new Map<string, Policy>();
  private readonly scores = new Map<string, { scores: ContainerScores; fp: string }>();
  private readonly matchCache = new Map<string, { generation: number; matches: VulnMatch[]; problems: MatchProblems }>();
  /** Latest drift detection per container and layer. */
  private readonly drift = new Map<string, Map<string, Date>>();
  private tick: NodeJS.Timeout | undefined;

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    private readonly graphs: GraphStore,
    private readonly feeds: FeedManager,
    readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
  }

  static async open(o: { db: Level<string, Uint8Array>; graphs: GraphStore; telemetry: TelemetryStore; feeds: FeedManager; log: Logger; policies?: readonly Policy[] }): Promise<ScoreEngine> {
    const e = new ScoreEngine(o.db, o.graphs, o.feeds, o.log);
    for await (const v of o.db.values({ gt: "inv!", lt: "inv!\xff" })) {
      const inv = fromBinary(ImageInventorySchema, v);
      e.inventories.set(inv.imageId, inv);
    }
    for await (const v of o.db.values({ gt: "policy!", lt: "policy!\xff" })) {
      const p = fromBinary(PolicySchema, v);
      e.policies.set(p.name, p);
    }
    // Configured policies seed the store; a policy changed through the admin API keeps its change.
    for (const p of o.policies ?? []) if (!e.policies.has(p.name)) await e.setPolicy(p, false);
    for (const d of await o.telemetry.detections({}, 100_000)) e.noteDetection(d);
    o.graphs.on("upsert", (g) => e.recompute(g.containerId));
    o.graphs.on("delete", (id) => {
      e.drift.delete(id);
      if (e.scores.delete(id)) e.emit("delete", id);
    });
    o.telemetry.on("detection", (d) => {
      e.noteDetection(d);
      e.recompute(d.containerId);
    });
    // A feed's new data is in the index when this fires: rescore now (matches are per image).
    o.feeds.on("changed", () => e.recomputeAll());
    // Drift fades with time (1 h, 24 h): look again every few minutes.
    e.tick = setInterval(() => e.recomputeAll(), 5 * 60_000);
    e.tick.unref();
    e.recomputeAll();
    return e;
  }

  stop(): void {
    if (this.tick) clearInterval(this.tick);
  }

  private noteDetection(d: Detection): void {
    const at = d.at ? timestampDate(d.at) : new Date();
    let m = this.drift.get(d.containerId);
    if (m === undefined) this.drift.set(d.containerId, (m = new Map()));
    const prev = m.get(d.layerId);
    if (prev === undefined || prev < at) m.set(d.layerId, at);
  }

  async putInventory(inv: ImageInventory): Promise<void> {
    await this.db.put(invKey(inv.imageId), toBinary(ImageInventorySchema, inv));
    this.inventories.set(inv.imageId, inv);
    this.matchCache.delete(inv.imageId);
    for (const g of this.graphs.all()) if (g.imageId === inv.imageId) this.recompute(g.containerId);
  }

  inventory(imageId: string): ImageInventory | undefined {
    return this.inventories.get(imageId);
  }

  listPolicies(): Policy[] {
    const defaultPolicy = this.policies.get("default") ?? create(PolicySchema, { ...DEFAULT_POLICY });
    const rest = [...this.policies.values()].filter((p) => p.name !== "default");
    return [...rest.sort((a, b) => a.order - b.order || a.name.localeCompare(b.name)), defaultPolicy];
  }

  async setPolicy(p: Policy, recompute = true): Promise<Policy> {
    validatePolicy(p);
    await this.db.put(policyKey(p.name), toBinary(PolicySchema, p));
    this.policies.set(p.name, p);
    if (recompute) this.recomputeAll();
    return p;
  }

  async deletePolicy(name: string): Promise<void> {
    if (!this.policies.has(name)) throw new ShadowError(Code.NotFound, `no policy named ${name}`);
    await this.db.del(policyKey(name));
    this.policies.delete(name);
    this.recomputeAll();
  }

  policyFor(labels: Record<string, string>): Policy {
    const list = this.listPolicies();
    return list.find((p) => p.name !== "default" && policyMatches(p, labels)) ?? (list[list.length - 1] as Policy);
  }

  get(containerId: string): ContainerScores | undefined {
    return this.scores.get(containerId)?.scores;
  }

  all(): ContainerScores[] {
    return [...this.scores.values()].map((s) => s.scores).sort((a, b) => b.risk - a.risk || a.containerName.localeCompare(b.containerName));
  }

  /** An image's vulnerability matches under the current index (cached per index generation). */
  matches(imageId: string): { matches: VulnMatch[]; problems: MatchProblems } | undefined {
    const inv = this.inventories.get(imageId);
    if (inv === undefined) return undefined;
    const gen = this.feeds.index.generation;
    const hit = this.matchCache.get(imageId);
    if (hit !== undefined && hit.generation === gen) return hit;
    const problems: MatchProblems = { unknownEcosystem: 0, unparseableVersion: 0, samples: [] };
    const matches = matchInventory(this.feeds.index, inv, problems);
    const entry = { generation: gen, matches, problems };
    this.matchCache.set(imageId, entry);
    return entry;
  }

  recomputeAll(): void {
    for (const g of this.graphs.all()) this.recompute(g.containerId);
  }

  recompute(containerId: string, now = new Date()): ContainerScores | undefined {
    const g = this.graphs.get(containerId);
    if (g === undefined) return undefined;
    const s = this.compute(g, now);
    const fp = fingerprint(s);
    const prev = this.scores.get(containerId);
    this.scores.set(containerId, { scores: s, fp });
    if (prev === undefined || prev.fp !== fp) this.emit("upsert", s);
    return s;
  }

  private compute(g: LayerGraph, now: Date): ContainerScores {
    const caveats: string[] = [];
    const inv = this.inventories.get(g.imageId);
    const m = this.matches(g.imageId);
    if (inv === undefined) caveats.push("no inventory of this image yet: threat is 0 until the agent reports its packages");
    else {
      for (const p of inv.partial) caveats.push(`partial inventory: ${p.path} in layer ${p.layerId.slice(0, 19)}: ${p.reason}`);
      if (m !== undefined && m.problems.unknownEcosystem > 0) caveats.push(`${m.problems.unknownEcosystem} packages of an unknown distribution release were not matched`);
      if (m !== undefined && m.problems.unparseableVersion > 0) caveats.push(`${m.problems.unparseableVersion} package versions could not be parsed (${m.problems.samples.slice(0, 3).join("; ")})`);
    }
    if (this.feeds.index.stats.advisories === 0) caveats.push("no vulnerability feed is loaded (aggregator --feed osv=…)");
    const byLayer = new Map<string, VulnMatch[]>();
    for (const v of m?.matches ?? []) {
      let l = byLayer.get(v.layerId);
      if (l === undefined) byLayer.set(v.layerId, (l = []));
      l.push(v);
    }
    const drift = this.drift.get(g.containerId);
    const layers = g.layers.map((l) => {
      const vulns = byLayer.get(l.layerId) ?? [];
      const threat = aggregateThreat(vulns.map((v) => v.threat));
      const latest = drift?.get(l.layerId);
      const d = driftScore(latest, now);
      const reasons: ScoreReason[] = vulns.slice(0, 10).map((v) => create(ScoreReasonSchema, { kind: "vuln", id: v.id, value: round3(v.threat), detail: vulnDetail(v) }));
      if (d > 0 && latest !== undefined) {
        reasons.unshift(create(ScoreReasonSchema, { kind: "drift", id: "drift", value: d / 100, detail: `executable not from any image layer run at ${latest.toISOString()}` }));
      }
      return create(LayerScoreSchema, {
        layerId: l.layerId,
        layerName: l.name,
        threat,
        anomaly: 0,
        hasAnomaly: false,
        drift: d,
        risk: riskScore(threat, undefined, d),
        vulns: vulns.length,
        reasons,
      });
    });
    const risk = Math.max(0, ...layers.map((l) => l.risk));
    const threat = Math.max(0, ...layers.map((l) => l.threat));
    const policy = this.policyFor(g.labels);
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
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function vulnDetail(v: VulnMatch): string {
  const parts = [`${v.package} ${v.installedVersion}${v.fixedVersion !== "" ? ` (fixed in ${v.fixedVersion})` : " (no fix)"}`];
  parts.push(v.cvssSource === "default" ? "CVSS unknown (5.0 assumed)" : `CVSS ${v.cvss.toFixed(1)} (${v.cvssSource})`);
  if (v.kev) parts.push(v.kevRansomware ? "KEV, ransomware" : "KEV");
  else parts.push(v.hasEpss ? `EPSS ${v.epss.toFixed(3)}` : "no EPSS");
  return parts.join(", ");
}

function fingerprint(s: ContainerScores): string {
  const parts = [s.policy?.name ?? "", String(s.risk), String(s.threat), String(s.vulns), String(s.rebuild), String(s.switch), s.caveats.join("|")];
  for (const l of s.layers) parts.push(`${l.layerId}:${l.risk}:${l.threat}:${l.drift}:${l.vulns}:${l.reasons.map((r) => r.id).join(",")}`);
  return parts.join(";");
}

