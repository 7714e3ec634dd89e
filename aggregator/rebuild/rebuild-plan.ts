/**
 * Which shadows the scores call for: every layer at or past its container's rebuild threshold
 * asks for a shadow of every image that contains it (a layer is shared by diffID, so a base
 * layer's advisory plans a shadow of each image built on it, whichever container showed it). One
 * plan per image, its reasons the union of its risky layers' reasons. A pure function of the
 * scores and the graphs, re-run whenever they change.
 */
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { ContainerScores, ScoreReason } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { jobIdOf, normalizeReasons } from "./job-key.js";

/** Reason names of what is not an advisory. */
export const DRIFT_REASON = "drift";
export const ANOMALY_REASON = "performance-anomaly";

/**
 * Containers named per plan: each is a place to prepare the shadow, and 4096 container ids keep a
 * job's record near 300 KB, well inside a reply's page.
 */
export const MAX_PLAN_CONTAINERS = 4096;

export interface PlannedRebuild {
  /** jobIdOf(imageId, reasons). */
  id: string;
  imageId: string;
  /** A name the image is known by (a container's image reference), or the id. */
  image: string;
  /** Sorted, distinct, at most MAX_REASONS. */
  reasons: string[];
  /** The highest risk among the layers that asked. */
  risk: number;
  sourceLayer: string;
  sourceLayerName: string;
  /** Containers running the image (ids, sorted) and their nodes. */
  containers: string[];
  nodes: string[];
  /**
   * What the reason names do not say, one line each: for `performance-anomaly` the feature, its
   * deviation, the score and the model (the job's log starts with them, `rebuilds --job` shows them).
   */
  notes?: string[];
}

/** The job note of an anomaly reason: the feature named, with the layer and container it was seen on. */
export function anomalyNote(r: ScoreReason, layerName: string, containerName: string): string {
  return `${ANOMALY_REASON}: ${r.detail || r.id} on layer ${layerName} of ${containerName}`;
}

/** A score reason as a job's reason: the advisory id, "drift", "performance-anomaly"; undefined for other kinds. */
export function reasonName(r: ScoreReason): string | undefined {
  switch (r.kind) {
    case "vuln":
      return r.id === "" ? undefined : r.id;
    case "drift":
      return DRIFT_REASON;
    case "anomaly":
      return ANOMALY_REASON;
    default:
      return undefined;
  }
}

interface ImageAcc {
  image: string;
  containers: Set<string>;
  nodes: Set<string>;
  /** Reason → its largest contribution, to keep the weightiest past MAX_REASONS. */
  reasons: Map<string, number>;
  risk: number;
  sourceLayer: string;
  sourceLayerName: string;
  /** The weightiest anomaly reason seen for the image, as its note. */
  anomaly: { value: number; note: string } | undefined;
}

/** The images of each layer id and the containers of each image, from the graphs. */
function indexGraphs(graphs: readonly LayerGraph[]): { imagesOfLayer: Map<string, Set<string>>; images: Map<string, ImageAcc> } {
  const imagesOfLayer = new Map<string, Set<string>>();
  const images = new Map<string, ImageAcc>();
  for (const g of graphs) {
    if (g.imageId === "") continue;
    let acc = images.get(g.imageId);
    if (acc === undefined) {
      acc = { image: g.image, containers: new Set(), nodes: new Set(), reasons: new Map(), risk: 0, sourceLayer: "", sourceLayerName: "", anomaly: undefined };
      images.set(g.imageId, acc);
    }
    // The same name whichever container is read first: the smallest non-empty one.
    if (g.image !== "" && (acc.image === "" || g.image < acc.image)) acc.image = g.image;
    acc.containers.add(g.containerId);
    if (g.node !== "") acc.nodes.add(g.node);
    for (const l of g.layers) {
      let s = imagesOfLayer.get(l.layerId);
      if (s === undefined) imagesOfLayer.set(l.layerId, (s = new Set()));
      s.add(g.imageId);
    }
  }
  return { imagesOfLayer, images };
}

/** The rebuilds the scores call for, one per image, riskiest first. */
export function planRebuilds(scores: readonly ContainerScores[], graphs: readonly LayerGraph[]): PlannedRebuild[] {
  const { imagesOfLayer, images } = indexGraphs(graphs);
  const asked = new Set<string>();
  for (const s of scores) {
    const threshold = s.policy?.rebuildThreshold;
    if (threshold === undefined) continue;
    for (const l of s.layers) {
      if (l.risk <= 0 || l.risk < threshold) continue;
      const reasons: Array<[string, number]> = [];
      let anomaly: { value: number; note: string } | undefined;
      for (const r of l.reasons) {
        const name = reasonName(r);
        if (name !== undefined) reasons.push([name, name === DRIFT_REASON || name === ANOMALY_REASON ? Infinity : r.value]);
        if (name === ANOMALY_REASON && (anomaly === undefined || r.value > anomaly.value)) anomaly = { value: r.value, note: anomalyNote(r, l.layerName || l.layerId.slice(0, 19), s.containerName || s.containerId.slice(0, 12)) };
      }
      if (reasons.length === 0) continue;
      for (const imageId of imagesOfLayer.get(l.layerId) ?? []) {
        const acc = images.get(imageId);
        if (acc === undefined) continue;
        asked.add(imageId);
        for (const [name, value] of reasons) acc.reasons.set(name, Math.max(acc.reasons.get(name) ?? -Infinity, value));
        if (anomaly !== undefined && (acc.anomaly === undefined || anomaly.value > acc.anomaly.value || (anomaly.value === acc.anomaly.value && anomaly.note < acc.anomaly.note))) acc.anomaly = anomaly;
        // The riskiest layer asks; of equal ones the lowest in the stack (by id, for a stable pick).
        if (l.risk > acc.risk || (l.risk === acc.risk && (acc.sourceLayer === "" || l.layerId < acc.sourceLayer))) {
          acc.risk = l.risk;
          acc.sourceLayer = l.layerId;
          acc.sourceLayerName = l.layerName;
        }
      }
    }
  }
  const plans: PlannedRebuild[] = [];
  for (const imageId of asked) {
    const acc = images.get(imageId) as ImageAcc;
    const reasons = normalizeReasons(acc.reasons.keys(), (r) => acc.reasons.get(r) ?? 0);
    plans.push({
      id: jobIdOf(imageId, reasons),
      imageId,
      image: acc.image === "" ? imageId : acc.image,
      reasons,
      risk: acc.risk,
      sourceLayer: acc.sourceLayer,
      sourceLayerName: acc.sourceLayerName,
      containers: [...acc.containers].sort().slice(0, MAX_PLAN_CONTAINERS),
      nodes: [...acc.nodes].sort(),
      notes: acc.anomaly !== undefined && reasons.includes(ANOMALY_REASON) ? [acc.anomaly.note] : [],
    });
  }
  return plans.sort((a, b) => b.risk - a.risk || (a.id < b.id ? -1 : 1));
}
