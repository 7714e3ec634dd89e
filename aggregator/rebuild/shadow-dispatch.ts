/**
 * Gets every ready shadow prepared on the nodes that run its source image: a PrepareShadow
 * command per container (id derived from job and container, so a repeat is answered from the
 * agent's journal), sent when the job becomes ready, when a new container of the image appears,
 * and again on a slow sweep for nodes that were not connected. The agent pulls, verifies the
 * signature and creates (does not start) the shadow container.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { CommandStatus } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { RebuildState, ShadowPreparationSchema, type RebuildJob, type ShadowPreparation } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import type { Logger } from "../../common/log.js";
import type { AgentIngest } from "../ingest/agent-service.js";
import type { GraphStore } from "../store/graph-store.js";

/** A pull by digest of a few hundred MB on a slow link; the agent answers a repeat at once. */
const PREPARE_TIMEOUT_MS = 180_000;
const SWEEP_MS = 30_000;

export interface DispatchJobs {
  all(): RebuildJob[];
  on(event: "upsert", fn: (job: RebuildJob) => void): unknown;
  /** Stores a node's answer with the job. */
  notePreparation(jobId: string, p: ShadowPreparation): Promise<void>;
}

export class ShadowDispatch {
  private readonly inFlight = new Set<string>();
  private sweep: NodeJS.Timeout | undefined;

  constructor(
    private readonly jobs: DispatchJobs,
    private readonly graphs: GraphStore,
    private readonly ingest: Pick<AgentIngest, "sendCommand" | "connectedNodes">,
    private readonly log: Logger,
    private readonly sweepMs = SWEEP_MS,
  ) {}

  start(): void {
    this.jobs.on("upsert", (j) => {
      if (j.state === RebuildState.READY) this.prepareJob(j);
    });
    this.graphs.on("upsert", (g) => {
      const j = this.newestReady(g.imageId);
      if (j !== undefined) this.prepareOne(j, g);
    });
    this.sweep = setInterval(() => this.sweepAll(), this.sweepMs);
    this.sweep.unref();
    this.sweepAll();
  }

  stop(): void {
    if (this.sweep) clearInterval(this.sweep);
  }

  /** The newest ready job of each image (the shadow a node should hold), in one pass over the jobs. */
  private newestReadyByImage(): Map<string, RebuildJob> {
    const best = new Map<string, RebuildJob>();
    for (const j of this.jobs.all()) {
      if (j.state !== RebuildState.READY || j.shadow === undefined) continue;
      const prev = best.get(j.imageId);
      if (prev === undefined || (j.shadow.builtAt?.seconds ?? 0n) > (prev.shadow?.builtAt?.seconds ?? 0n)) best.set(j.imageId, j);
    }
    return best;
  }

  private newestReady(imageId: string): RebuildJob | undefined {
    return this.newestReadyByImage().get(imageId);
  }

  private sweepAll(): void {
    for (const j of this.newestReadyByImage().values()) this.prepareJob(j);
  }

  private prepareJob(job: RebuildJob): void {
    for (const g of this.graphs.all()) if (g.imageId === job.imageId) this.prepareOne(job, g);
  }

  private prepareOne(job: RebuildJob, g: LayerGraph): void {
    const s = job.shadow;
    if (s === undefined || g.state === "removing" || g.state === "dead") return;
    const done = job.preparations.find((p) => p.containerId === g.containerId && p.node === g.node);
    if (done !== undefined && (done.state === "prepared" || done.state === "refused")) return;
    if (!this.ingest.connectedNodes().includes(g.node)) return;
    const key = `${job.id}/${g.containerId}`;
    if (this.inFlight.has(key)) return;
    this.inFlight.add(key);
    const id = `prep-${job.id.slice(0, 16)}-${g.containerId.slice(0, 16)}`;
    const log = this.log.child({ job: job.id.slice(0, 12), node: g.node, container: g.containerName || g.containerId.slice(0, 12) });
    const note = (state: string, message: string, shadowContainerId = "") =>
      this.jobs.notePreparation(job.id, create(ShadowPreparationSchema, { node: g.node, containerId: g.containerId, state, message, shadowContainerId, at: timestampNow() })).catch((err: unknown) =>
        log.warn({ err: String(err) }, "cannot store a shadow preparation"),
      );
    void note("pending", `PrepareShadow ${id} sent`)
      .then(() =>
        this.ingest.sendCommand(
          g.node,
          {
            id,
            action: {
              case: "prepareShadow",
              value: {
                containerId: g.containerId,
                shadowImage: s.reference,
                layerIds: s.layerIds,
                reason: job.reasons.join(";"),
                jobId: job.id,
                imageId: s.imageId,
                manifestDigest: s.manifestDigest,
                localOnly: s.localOnly,
                signaturePayload: s.signaturePayload,
                signature: s.signature,
              },
            },
          },
          PREPARE_TIMEOUT_MS,
        ),
      )
      .then(async (r) => {
        const state = r.status === CommandStatus.OK ? "prepared" : r.status === CommandStatus.REJECTED ? "refused" : "failed";
        log.info({ state, message: r.message }, "shadow preparation");
        await note(state, r.message, r.shadowContainerId);
      })
      .catch(async (err: unknown) => {
        log.warn({ err: String(err) }, "shadow preparation failed; tried again on the next sweep");
        await note("failed", err instanceof Error ? err.message : String(err));
      })
      .finally(() => this.inFlight.delete(key));
  }
}
