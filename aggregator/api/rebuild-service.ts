/**
 * The rebuild stage's face: QueryService.ListRebuilds / WatchRebuilds (jobs, the builder pool's
 * health, where shadows go) and AdminService.CancelRebuild / ForceRebuild / RerunRebuild. Jobs are
 * changed in place by the scheduler, so sizes are measured on each read, not remembered.
 */
import type * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { AdminService, QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { ListRebuildsResponseSchema, RebuildEvent_Type, RebuildEventSchema, RebuildJobSchema, type RebuildEvent, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { RebuildScheduler } from "../rebuild/scheduler.js";
import { runBoundedWatch } from "./bounded-watch.js";
import { pageOf } from "./pages.js";

const jobSize = (j: RebuildJob) => toBinary(RebuildJobSchema, j).length;

/** Whether a job's source image is `ref`: its id, its id without "sha256:", a hex prefix (4+) of it, or its name. */
export function jobOfImage(j: RebuildJob, ref: string): boolean {
  if (j.imageId === ref || j.image === ref) return true;
  const hex = ref.replace(/^sha256:/, "");
  return /^[0-9a-f]{4,64}$/.test(hex) && j.imageId.replace(/^sha256:/, "").startsWith(hex);
}

export function rebuildQueryImpl({ scheduler, metrics }: { scheduler: RebuildScheduler; metrics: AggregatorMetrics }): grpc.UntypedServiceImplementation {
  const m = QueryService.method;
  return {
    listRebuilds: unaryHandler(m.listRebuilds, async (req) => {
      let list = req.job !== "" ? [scheduler.find(req.job)] : scheduler.all();
      if (req.image !== "") list = list.filter((j) => jobOfImage(j, req.image));
      const page = pageOf(list, { key: (j) => [j.id], size: jobSize, query: `rebuilds ${req.job} ${req.image}` }, req);
      return create(ListRebuildsResponseSchema, {
        jobs: page.items,
        nextPageToken: page.nextPageToken,
        builders: scheduler.builders(),
        destination: scheduler.destination,
        counts: scheduler.counts(),
      });
    }),
    watchRebuilds: serverStreamHandler(m.watchRebuilds, async (_req, call) => {
      const upsert = (j: RebuildJob) => create(RebuildEventSchema, { type: RebuildEvent_Type.UPSERT, jobId: j.id, job: j });
      await runBoundedWatch<RebuildEvent>(call, {
        kind: "rebuilds",
        metrics,
        size: (e) => 40 + (e.job !== undefined ? jobSize(e.job) : 0),
        subscribe: (send) =>
          scheduler.follow(
            (j) => send(upsert(j)),
            (id) => send(create(RebuildEventSchema, { type: RebuildEvent_Type.DELETE, jobId: id })),
          ),
        snapshot: () =>
          scheduler.all().map((j) => () => {
            const now = scheduler.get(j.id);
            return now === undefined ? undefined : upsert(now);
          }),
        snapshotDone: () => create(RebuildEventSchema, { type: RebuildEvent_Type.SNAPSHOT_DONE }),
        resync: () => create(RebuildEventSchema, { type: RebuildEvent_Type.RESYNC }),
      });
    }),
  };
}

export function rebuildAdminImpl({ scheduler }: { scheduler: RebuildScheduler }): grpc.UntypedServiceImplementation {
  const m = AdminService.method;
  return {
    cancelRebuild: unaryHandler(m.cancelRebuild, (req) => scheduler.cancel(req.job)),
    forceRebuild: unaryHandler(m.forceRebuild, (req) => scheduler.force(req)),
    rerunRebuild: unaryHandler(m.rerunRebuild, (req) => scheduler.rerun(req.job)),
  };
}
