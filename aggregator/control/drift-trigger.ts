/**
 * The drift trigger: a drift detection (an executable not from any image layer was run) in a
 * container whose policy says switch_on_drift asks for a switchover at once, whatever the risk:
 * to its prepared shadow, or, when none is ready, after a rebuild on demand (the record waits).
 * A container already switched to its current shadow once (and rolled back) is not switched to
 * it again; a shadow container and a stopped one are never switched.
 */
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { SwitchoverKind, SwitchoverTrigger } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { Detection } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { Policy } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { podOf, type PodSubject } from "../risk/policies.js";
import type { Logger } from "../../common/log.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { SwitchoverStore } from "../store/switchover-store.js";
import { isShadowContainer, type SwitchoverControl } from "./switchover-control.js";

export interface DriftTriggerOptions {
  detections: { on(e: "detection", fn: (d: Detection) => void): unknown; off(e: "detection", fn: (d: Detection) => void): unknown };
  graphs: { get(id: string): LayerGraph | undefined };
  policyFor: (labels: Record<string, string>, pod?: PodSubject) => Policy;
  records: SwitchoverStore;
  control: SwitchoverControl;
  log: Logger;
  metrics?: AggregatorMetrics;
}

/** The detection in words: what ran, from where, when. */
export function driftReason(d: Detection): string {
  const at = d.at !== undefined ? new Date(Number(d.at.seconds) * 1000).toISOString() : "now";
  return `drift: ${d.path || d.comm || "an executable"} (${d.reason || "not from an image layer"}) run in ${d.layerId.slice(0, 19) || "the writable layer"} at ${at}`;
}

export class DriftTrigger {
  private readonly onDetection = (d: Detection) => this.consider(d);

  constructor(private readonly o: DriftTriggerOptions) {}

  start(): void {
    this.o.detections.on("detection", this.onDetection);
  }

  stop(): void {
    this.o.detections.off("detection", this.onDetection);
  }

  private consider(d: Detection): void {
    const g = this.o.graphs.get(d.containerId);
    if (g === undefined || g.state !== "running" || isShadowContainer(g)) return;
    if (!this.o.policyFor(g.labels, podOf(g)).switchOnDrift) return;
    const decided = (decision: string) => this.o.metrics?.switchoverTriggers.inc({ trigger: "drift", decision });
    const log = this.o.log.child({ container: g.containerName || g.containerId.slice(0, 12), node: g.node, path: d.path.slice(0, 200) });
    if (this.o.control.busy(g.containerId) !== undefined) return void decided("busy");
    const shadow = this.o.control.shadowFor(g);
    if (shadow !== undefined && this.o.records.all().some((r) => r.kind === SwitchoverKind.SWITCHOVER && r.containerId === g.containerId && r.jobId === shadow.job.id)) return void decided("switched-to-this-shadow-before");
    decided("asked");
    log.info("drift in a container whose policy switches on drift: switching over");
    this.o.control.switchover({ container: g.containerId, trigger: SwitchoverTrigger.DRIFT, reason: driftReason(d), rebuildIfMissing: true }).catch((err: unknown) => log.warn({ err: String(err) }, "drift switchover not done"));
  }
}
