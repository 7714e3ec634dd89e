/**
 * The switchover calls: QueryService.ListSwitchovers (pages, newest first) and WatchSwitchovers
 * (a snapshot, then every change, bounded like the other watches), AdminService.Switchover and
 * Rollback (an operator's, through the control: admin certificates only, authorize.ts).
 */
import type * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AdminService, QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import {
  ListSwitchoversResponseSchema,
  SwitchoverEvent_Type,
  SwitchoverEventSchema,
  SwitchoverRecordSchema,
  SwitchoverTrigger,
  type SwitchoverEvent,
  type SwitchoverRecord,
} from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { encodedSize } from "../../common/encoded-size.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { AggregatorMetrics } from "../metrics.js";
import { checkRef, namesContainer } from "../control/resolve-container.js";
import type { SwitchoverRecordsView, SwitchoverRequester } from "../control/types.js";
import { recordTime } from "../store/switchover-store.js";
import { runBoundedWatch } from "./bounded-watch.js";
import { pageOf } from "./pages.js";

/** Whether a record is about the container `ref` names (original or shadow; id, 12+ hex prefix or name). */
export function recordOf(ref: string): (r: SwitchoverRecord) => boolean {
  if (ref === "") return () => true;
  checkRef(ref);
  return (r) => namesContainer(ref, r.containerId, r.containerName) || namesContainer(ref, r.shadowContainerId, r.shadowContainerName);
}

export function switchoverQueryImpl({ records, metrics }: { records: SwitchoverRecordsView; metrics: AggregatorMetrics }): grpc.UntypedServiceImplementation {
  const m = QueryService.method;
  return {
    listSwitchovers: unaryHandler(m.listSwitchovers, async (req) => {
      const page = pageOf(records.all().filter(recordOf(req.container)), { key: (r) => [-recordTime(r), r.id], size: (r) => encodedSize(SwitchoverRecordSchema, r), query: `switchovers ${req.container}` }, req);
      return create(ListSwitchoversResponseSchema, { records: page.items, nextPageToken: page.nextPageToken });
    }),
    watchSwitchovers: serverStreamHandler(m.watchSwitchovers, async (req, call) => {
      const wanted = recordOf(req.container);
      const upsert = (r: SwitchoverRecord) => create(SwitchoverEventSchema, { type: SwitchoverEvent_Type.UPSERT, record: r });
      await runBoundedWatch<SwitchoverEvent>(call, {
        kind: "switchovers",
        metrics,
        size: (e) => 16 + (e.record !== undefined ? encodedSize(SwitchoverRecordSchema, e.record) : 0),
        subscribe: (send) => {
          const on = (r: SwitchoverRecord) => {
            if (wanted(r)) send(upsert(r));
          };
          records.on("upsert", on);
          return () => records.off("upsert", on);
        },
        // Oldest first, so a follower ends on the newest state of each.
        snapshot: () =>
          records
            .all()
            .filter(wanted)
            .sort((a, b) => recordTime(a) - recordTime(b))
            .map((r) => () => {
              const now = records.get(r.id);
              return now === undefined ? undefined : upsert(now);
            }),
        snapshotDone: () => create(SwitchoverEventSchema, { type: SwitchoverEvent_Type.SNAPSHOT_DONE }),
        resync: () => create(SwitchoverEventSchema, { type: SwitchoverEvent_Type.RESYNC }),
      });
    }),
  };
}

export function switchoverAdminImpl({ control }: { control: SwitchoverRequester }): grpc.UntypedServiceImplementation {
  const m = AdminService.method;
  return {
    switchover: unaryHandler(m.switchover, (req) =>
      control.switchover({ container: req.container, trigger: SwitchoverTrigger.MANUAL, reason: req.reason || "asked for by an operator", mode: req.mode, rebuildIfMissing: req.rebuildIfMissing }),
    ),
    rollback: unaryHandler(m.rollback, (req) => control.rollback({ container: req.container, trigger: SwitchoverTrigger.MANUAL, reason: req.reason || "asked for by an operator" })),
  };
}
