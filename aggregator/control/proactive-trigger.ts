/**
 * The proactive trigger: a container whose scores say `switch` (its risk at or past its policy's
 * switch threshold) and that has a ready, prepared shadow is switched over, once per (container,
 * shadow job): a container rolled back from a shadow is never switched to that shadow again, and
 * neither a shadow container itself nor a stopped container is switched. Looked at again whenever
 * the container's scores change or a job changes (a shadow turned ready, a node prepared it), and
 * on a slow sweep (an agent that connects changes neither).
 */
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { SwitchoverKind, SwitchoverTrigger } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { ContainerScores } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { Logger } from "../../common/log.js";
import type { AggregatorMetrics } from "../metrics.js";
import { ANOMALY_REASON } from "../rebuild/rebuild-plan.js";
import type { SwitchoverStore } from "../store/switchover-store.js";
import { isShadowContainer, type ControlJobs, type SwitchoverControl } from "./switchover-control.js";

/** How often every container that should switch is looked at again. */
const SWEEP_MS = 10_000;
/** Advisories named in a proactive reason; the rest are counted. */
const REASON_ADVISORIES = 5;

export interface ProactiveTriggerOptions {
  scores: { all(): ContainerScores[]; get(id: string): ContainerScores | undefined; on(e: "upsert", fn: (s: ContainerScores) => void): unknown; off(e: "upsert", fn: (s: ContainerScores) => void): unknown };
  graphs: { get(id: string): LayerGraph | undefined };
  jobs: ControlJobs;
  records: SwitchoverStore;
  control: SwitchoverControl;
  log: Logger;
  metrics?: AggregatorMetrics;
  sweepMs?: number;
}

/**
 * Why the scores warrant a switch, in words: the risk against the threshold and the advisories
 * behind it; an anomaly as `performance-anomaly (<feature> …σ above baseline …)`.
 */
export function proactiveReason(s: ContainerScores): string {
  const ids: string[] = [];
  for (const l of [...s.layers].sort((a, b) => b.risk - a.risk))
    for (const r of l.reasons) {
      const id = r.kind === "anomaly" ? `${ANOMALY_REASON} (${r.detail || r.id})` : r.id;
      if (!ids.includes(id)) ids.push(id);
    }
  const named = ids.slice(0, REASON_ADVISORIES).join(", ") + (ids.length > REASON_ADVISORIES ? ` and ${ids.length - REASON_ADVISORIES} more` : "");
  return `risk ${s.risk.toFixed(1)} ≥ switch threshold ${s.policy?.switchThreshold ?? "?"} (policy ${s.policy?.name ?? "?"})${named !== "" ? `: ${named}` : ""}`;
}

export class ProactiveTrigger {
  /** (container, job) pairs asked for and not refused: asked once only. */
  private readonly asked = new Set<string>();
  private sweep: NodeJS.Timeout | undefined;
  private readonly onScores = (s: ContainerScores) => this.consider(s.containerId);
  private readonly onJob = (j: RebuildJob) => {
    for (const p of j.preparations) if (p.state === "prepared") this.consider(p.containerId);
  };

  constructor(private readonly o: ProactiveTriggerOptions) {}

  start(): void {
    this.o.scores.on("upsert", this.onScores);
    this.o.jobs.on("upsert", this.onJob);
    this.sweep = setInterval(() => this.sweepAll(), this.o.sweepMs ?? SWEEP_MS);
    this.sweep.unref();
    this.sweepAll();
  }

  private sweepAll(): void {
    for (const s of this.o.scores.all()) if (s.switch) this.consider(s.containerId);
  }

  stop(): void {
    this.o.scores.off("upsert", this.onScores);
    this.o.jobs.off("upsert", this.onJob);
    if (this.sweep) clearInterval(this.sweep);
  }

  private consider(containerId: string): void {
    const s = this.o.scores.get(containerId);
    if (s?.switch !== true) return;
    const g = this.o.graphs.get(containerId);
    if (g === undefined || g.state !== "running" || isShadowContainer(g)) return;
    const shadow = this.o.control.shadowFor(g);
    if (shadow === undefined) return;
    const key = `${containerId}/${shadow.job.id}`;
    if (this.asked.has(key)) return;
    // Once per shadow: a switchover to it (whatever became of it, a rollback included) ends the matter.
    if (this.o.records.all().some((r) => r.kind === SwitchoverKind.SWITCHOVER && r.containerId === containerId && r.jobId === shadow.job.id)) return;
    if (this.o.control.busy(containerId) !== undefined || !this.o.control.reachable(g.node)) return;
    this.asked.add(key);
    const log = this.o.log.child({ container: g.containerName || containerId.slice(0, 12), node: g.node, job: shadow.job.id.slice(0, 12) });
    const reason = proactiveReason(s);
    this.o.metrics?.switchoverTriggers.inc({ trigger: "proactive", decision: "asked" });
    log.info({ reason }, "risk past the switch threshold with a prepared shadow: switching over");
    this.o.control.switchover({ container: containerId, trigger: SwitchoverTrigger.PROACTIVE, reason }).catch((err: unknown) => {
      // Refused before a record was made: looked at again on the next change.
      if (this.o.records.all().every((r) => !(r.containerId === containerId && r.jobId === shadow.job.id))) this.asked.delete(key);
      log.warn({ err: String(err) }, "proactive switchover not done");
    });
  }
}
