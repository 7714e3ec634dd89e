/**
 * Keeps every container's scores current: recomputed when its graph, its image's inventory, the
 * feeds, its drift detections, its windows' anomaly verdicts or the policies change, and announced
 * (an `upsert` event) only when something an operator would see changed. Drift fades with time,
 * so all are looked at again every few minutes; an anomaly verdict goes stale after a few windows,
 * so its container is looked at again when it does.
 */
import { EventEmitter } from "node:events";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Level } from "level";
import type { Detection, WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { PolicySchema, type ContainerScores, type ImageInventory, type Policy } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { FeedManager } from "../feeds/manager.js";
import type { GraphStore } from "../store/graph-store.js";
import { InventoryStore } from "../store/inventory-store.js";
import { keys } from "../store/keys.js";
import { MessageStore } from "../store/message-store.js";
import type { TelemetryStore } from "../store/telemetry-store.js";
import { ImageMatches, type ImageMatchResult } from "../vulns/image-matches.js";
import { orderPolicies, podOf, selectPolicy, type PodSubject } from "./policies.js";
import { validatePolicy } from "./policy-schema.js";
import { scoreContainer, type LayerAnomaly } from "./score-container.js";
import { anomalyFreshUntil } from "../vulns/scoring.js";

/** How often every container is scored again, for drift that faded (1 h, 24 h). */
const RESCORE_EVERY_MS = 5 * 60_000;
/** Anomaly reasons kept per layer verdict (the model sends at most 5). */
const MAX_ANOMALY_REASONS = 5;
/** Detections read back on start to know each layer's latest drift. */
const DETECTIONS_ON_START = 100_000;

export interface ScoreEngineEvents {
  upsert: [ContainerScores];
  delete: [string];
}

export interface ScoreEngineOptions {
  db: Level<string, Uint8Array>;
  graphs: GraphStore;
  telemetry: TelemetryStore;
  feeds: FeedManager;
  log: Logger;
  /** Policies to seed the store with (a policy changed through AdminService keeps its change). */
  policies?: readonly Policy[];
}

export class ScoreEngine extends EventEmitter<ScoreEngineEvents> {
  private readonly scores = new Map<string, { scores: ContainerScores; fp: string }>();
  private readonly imageMatches: ImageMatches;
  /** Latest drift detection per container and layer. */
  private readonly drift = new Map<string, Map<string, Date>>();
  /** Latest anomaly verdict per container and layer, and the timer that rescores it when one goes stale. */
  private readonly anomalies = new Map<string, { layers: Map<string, LayerAnomaly>; timer?: NodeJS.Timeout | undefined }>();
  private tick: NodeJS.Timeout | undefined;

  private constructor(
    /** Image inventories as each node reported them; scored as their union. */
    private readonly inventories: InventoryStore,
    /** The policies an operator set or the configuration seeded, by name. */
    private readonly policies: MessageStore<typeof PolicySchema>,
    private readonly graphs: GraphStore,
    private readonly feeds: FeedManager,
    readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
    this.imageMatches = new ImageMatches(feeds.index);
  }

  static async open(o: ScoreEngineOptions): Promise<ScoreEngine> {
    const inventories = await InventoryStore.open(o.db);
    const policies = await MessageStore.open(o.db, PolicySchema, { key: keys.policy, range: keys.policyRange, id: (p) => p.name });
    const e = new ScoreEngine(inventories, policies, o.graphs, o.feeds, o.log);
    // Configured policies seed the store; a policy changed through the admin API keeps its change.
    for (const p of o.policies ?? []) if (e.policies.get(p.name) === undefined) await e.setPolicy(p, false);
    for (const d of await o.telemetry.detections({}, DETECTIONS_ON_START)) e.noteDetection(d);
    o.graphs.on("upsert", (g) => e.recompute(g.containerId));
    o.graphs.on("delete", (id) => {
      e.drift.delete(id);
      e.forgetAnomalies(id);
      if (e.scores.delete(id)) e.emit("delete", id);
    });
    o.telemetry.on("window", (w) => e.noteWindow(w));
    o.telemetry.on("detection", (d) => {
      e.noteDetection(d);
      e.recompute(d.containerId);
    });
    // A feed's new data is in the index when this fires: rescore now (matches are per image).
    o.feeds.on("changed", () => e.recomputeAll());
    e.tick = setInterval(() => e.recomputeAll(), RESCORE_EVERY_MS);
    e.tick.unref();
    e.recomputeAll();
    return e;
  }

  stop(): void {
    if (this.tick) clearInterval(this.tick);
    for (const id of [...this.anomalies.keys()]) this.forgetAnomalies(id);
  }

  private forgetAnomalies(containerId: string): void {
    const a = this.anomalies.get(containerId);
    if (a?.timer !== undefined) clearTimeout(a.timer);
    this.anomalies.delete(containerId);
  }

  /** Keeps a window's anomaly verdicts; the container is rescored when it had or has one. */
  private noteWindow(w: WindowSummary, arrived = new Date()): void {
    const scored = w.layers.filter((l) => l.anomaly !== undefined);
    if (scored.length === 0 && !this.anomalies.has(w.containerId)) return;
    const end = w.end === undefined ? undefined : timestampDate(w.end);
    const seconds = w.start === undefined || end === undefined ? Number.NaN : (end.getTime() - timestampDate(w.start).getTime()) / 1000;
    const freshUntil = anomalyFreshUntil(end, seconds, arrived);
    let entry = this.anomalies.get(w.containerId);
    if (entry === undefined) this.anomalies.set(w.containerId, (entry = { layers: new Map() }));
    for (const l of scored) {
      const a = l.anomaly;
      if (a === undefined) continue;
      // What an agent sends is bounded here: the top reasons only, names cut to a sane length.
      const reasons = a.reasons.slice(0, MAX_ANOMALY_REASONS).map((r) => ({ feature: r.feature.slice(0, 128), sigma: r.sigma }));
      entry.layers.set(l.layerId, { anomaly: { score: a.score, alerting: a.alerting, generic: a.generic, modelVersion: a.modelVersion.slice(0, 128), reasons }, freshUntil });
    }
    this.recompute(w.containerId, arrived);
  }

  /** Drops stale verdicts and sets the timer for the next one to go stale (which rescores the container). */
  private scheduleAnomalyExpiry(containerId: string, now: Date): void {
    const entry = this.anomalies.get(containerId);
    if (entry === undefined) return;
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    entry.timer = undefined;
    let next = Number.POSITIVE_INFINITY;
    for (const [layerId, a] of entry.layers) {
      if (a.freshUntil < now) entry.layers.delete(layerId);
      else next = Math.min(next, a.freshUntil.getTime());
    }
    if (entry.layers.size === 0) {
      this.anomalies.delete(containerId);
      return;
    }
    entry.timer = setTimeout(() => this.recompute(containerId), Math.max(0, next - now.getTime()) + 5);
    entry.timer.unref();
  }

  private noteDetection(d: Detection): void {
    const at = d.at ? timestampDate(d.at) : new Date();
    let m = this.drift.get(d.containerId);
    if (m === undefined) this.drift.set(d.containerId, (m = new Map()));
    const prev = m.get(d.layerId);
    if (prev === undefined || prev < at) m.set(d.layerId, at);
  }

  /** Stores `node`'s inventory of an image (another node's report of it stays as it was). */
  async putInventory(inv: ImageInventory, node: string): Promise<void> {
    await this.inventories.put(node, inv);
    this.imageMatches.forget(inv.imageId);
    for (const g of this.graphs.all()) if (g.imageId === inv.imageId) this.recompute(g.containerId);
  }

  /** The image's inventory as scored: the union of what the nodes reported. */
  inventory(imageId: string): ImageInventory | undefined {
    return this.inventories.get(imageId)?.inventory;
  }

  /** What one node reported about an image. */
  inventoryOfNode(imageId: string, node: string): ImageInventory | undefined {
    return this.inventories.ofNode(imageId, node);
  }

  /** The policies in the order they are tried, the default last. */
  listPolicies(): Policy[] {
    return orderPolicies(this.policies.all());
  }

  /** Checks and stores a policy (replacing one of the same name); returns it as stored. */
  async setPolicy(p: Policy, recompute = true): Promise<Policy> {
    const checked = validatePolicy(p);
    await this.policies.put(checked);
    if (recompute) this.recomputeAll();
    return checked;
  }

  async deletePolicy(name: string): Promise<void> {
    if ((await this.policies.delete(name)) === undefined) throw new ShadowError(Code.NotFound, `no policy named ${name}`);
    this.recomputeAll();
  }

  policyFor(labels: Record<string, string>, pod?: PodSubject): Policy {
    return selectPolicy(this.listPolicies(), labels, pod);
  }

  get(containerId: string): ContainerScores | undefined {
    return this.scores.get(containerId)?.scores;
  }

  all(): ContainerScores[] {
    return [...this.scores.values()].map((s) => s.scores).sort((a, b) => b.risk - a.risk || a.containerName.localeCompare(b.containerName));
  }

  /** An image's vulnerability matches under the current index (cached per index generation). */
  matches(imageId: string): ImageMatchResult | undefined {
    const inv = this.inventory(imageId);
    return inv === undefined ? undefined : this.imageMatches.get(inv);
  }

  recomputeAll(): void {
    for (const g of this.graphs.all()) this.recompute(g.containerId);
  }

  recompute(containerId: string, now = new Date()): ContainerScores | undefined {
    const g = this.graphs.get(containerId);
    if (g === undefined) return undefined;
    const view = this.inventories.get(g.imageId);
    const s = scoreContainer({
      graph: g,
      inventory: view?.inventory,
      matches: this.matches(g.imageId),
      feedsLoaded: this.feeds.index.stats.advisories > 0,
      drift: this.drift.get(g.containerId),
      anomaly: this.anomalies.get(g.containerId)?.layers,
      policy: this.policyFor(g.labels, podOf(g)),
      now,
    });
    if (view?.disagreement !== undefined) s.caveats.push(view.disagreement);
    this.scheduleAnomalyExpiry(containerId, now);
    const fp = fingerprint(s);
    const prev = this.scores.get(containerId);
    this.scores.set(containerId, { scores: s, fp });
    if (prev === undefined || prev.fp !== fp) this.emit("upsert", s);
    return s;
  }
}

/** What an operator would notice changed (not the computation time). */
function fingerprint(s: ContainerScores): string {
  const parts = [s.policy?.name ?? "", String(s.risk), String(s.threat), String(s.vulns), String(s.rebuild), String(s.switch), s.caveats.join("|")];
  for (const l of s.layers) parts.push(`${l.layerId}:${l.risk}:${l.threat}:${l.drift}:${l.hasAnomaly ? Math.round(l.anomaly) : "-"}:${l.vulns}:${l.reasons.map((r) => r.id).join(",")}`);
  return parts.join(";");
}
