/**
 * The shadow a container can be switched to now: a READY rebuild job of its image whose shadow
 * the container's node prepared for it (created, not started), the newest such job.
 */
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { RebuildState, type RebuildJob, type ShadowPreparation } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";

export interface PreparedShadow {
  job: RebuildJob;
  preparation: ShadowPreparation;
  /** The created shadow container on the node. */
  containerId: string;
  /** The shadow image reference (registry@digest, or the local image id). */
  image: string;
}

/** The container's preparation in a job (one per node and container), if any. */
export function preparationOf(job: RebuildJob, g: Pick<LayerGraph, "containerId" | "node">): ShadowPreparation | undefined {
  return job.preparations.find((p) => p.containerId === g.containerId && p.node === g.node);
}

export function preparedShadow(jobs: Iterable<RebuildJob>, g: Pick<LayerGraph, "containerId" | "node" | "imageId">): PreparedShadow | undefined {
  let best: PreparedShadow | undefined;
  for (const job of jobs) {
    if (job.state !== RebuildState.READY || job.shadow === undefined || job.shadow.reference === "" || job.imageId !== g.imageId) continue;
    const p = preparationOf(job, g);
    if (p?.state !== "prepared" || p.shadowContainerId === "") continue;
    const built = job.shadow.builtAt?.seconds ?? 0n;
    if (best === undefined || built > (best.job.shadow?.builtAt?.seconds ?? 0n)) best = { job, preparation: p, containerId: p.shadowContainerId, image: job.shadow.reference };
  }
  return best;
}
