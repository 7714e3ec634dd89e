/**
 * The threat side of QueryService: scores (listed and watched), an image's vulnerabilities and
 * inventory, and the feeds' status.
 */
import type * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import {
  GetInventoryResponseSchema,
  GetVulnsResponseSchema,
  ListFeedsResponseSchema,
  ListScoresResponseSchema,
  QueryService,
  ScoreEvent_Type,
  ScoreEventSchema,
} from "../../proto/gen/shadowlayer/v1/query_pb.js";
import type { ContainerScores, ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { FeedManager } from "../feeds/manager.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { ScoreEngine } from "../risk/score-engine.js";
import type { GraphStore } from "../store/graph-store.js";
import { feedStatuses } from "./feed-statuses.js";
import { findGraph } from "./query-service.js";

export interface VulnsDeps {
  store: GraphStore;
  scores: ScoreEngine;
  feeds: FeedManager;
  metrics: AggregatorMetrics;
}

/**
 * Whether an image's vulnerabilities can be believed: a script must tell "no vulnerabilities"
 * from "not scanned yet" (no inventory) and from "scanned in part" (a database unreadable, a
 * search past its cap or budget).
 */
export function inventoryStatus(inv: ImageInventory | undefined): "pending" | "partial" | "scanned" {
  if (inv === undefined) return "pending";
  return inv.partial.length > 0 ? "partial" : "scanned";
}

export function vulnsQueryImpl({ store, scores, feeds, metrics }: VulnsDeps): grpc.UntypedServiceImplementation {
  const m = QueryService.method;
  return {
    listScores: unaryHandler(m.listScores, async (req) => {
      let list = scores.all();
      if (req.node !== "") list = list.filter((s) => s.node === req.node);
      if (req.container !== "") {
        const id = findGraph(store, req.container).containerId;
        list = list.filter((s) => s.containerId === id);
      }
      return create(ListScoresResponseSchema, { containers: list });
    }),
    watchScores: serverStreamHandler(m.watchScores, async (req, call) => {
      const wanted = (node: string) => req.node === "" || node === req.node;
      const onUpsert = (s: ContainerScores) => {
        if (wanted(s.node)) call.write(create(ScoreEventSchema, { type: ScoreEvent_Type.UPSERT, containerId: s.containerId, scores: s }));
      };
      const onDelete = (id: string) => call.write(create(ScoreEventSchema, { type: ScoreEvent_Type.DELETE, containerId: id }));
      scores.on("upsert", onUpsert);
      scores.on("delete", onDelete);
      metrics.watchers.inc();
      const stop = () => {
        scores.off("upsert", onUpsert);
        scores.off("delete", onDelete);
        metrics.watchers.dec();
      };
      call.once("cancelled", stop);
      call.once("close", stop);
      for (const s of scores.all()) onUpsert(s);
      call.write(create(ScoreEventSchema, { type: ScoreEvent_Type.SNAPSHOT_DONE }));
    }),
    getVulns: unaryHandler(m.getVulns, async (req) => {
      const g = findGraph(store, req.container);
      const s = scores.get(g.containerId) ?? scores.recompute(g.containerId);
      const inv = scores.inventory(g.imageId);
      const mt = scores.matches(g.imageId);
      return create(GetVulnsResponseSchema, {
        ...(s !== undefined ? { scores: s } : {}),
        matches: mt?.matches ?? [],
        ...(inv?.os !== undefined ? { os: inv.os } : {}),
        partial: inv?.partial ?? [],
        packages: inv?.packages.length ?? 0,
        inventoryStatus: inventoryStatus(inv),
      });
    }),
    getInventory: unaryHandler(m.getInventory, async (req) => {
      const g = findGraph(store, req.container);
      const inv = scores.inventory(g.imageId);
      if (inv === undefined) throw new ShadowError(Code.NotFound, `no inventory of image ${g.image} yet (the agent reports it after reading the layers)`);
      return create(GetInventoryResponseSchema, { graph: g, inventory: inv });
    }),
    listFeeds: unaryHandler(m.listFeeds, async () => create(ListFeedsResponseSchema, { feeds: feedStatuses(feeds) })),
  };
}
