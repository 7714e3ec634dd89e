/**
 * The threat side of QueryService: scores (listed and watched), an image's vulnerabilities and
 * inventory, and the feeds' status.
 */
import type * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  GetInventoryResponseSchema,
  GetVulnsResponseSchema,
  ListFeedsResponseSchema,
  ListScoresResponseSchema,
  QueryService,
  ScoreEvent_Type,
  ScoreEventSchema,
  type ScoreEvent,
} from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { ContainerScoresSchema, FeedStatusSchema, ImageInventorySchema, PackageSchema, VulnMatchSchema, type ContainerScores, type ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { LayerGraphSchema } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { encodedSize } from "../../common/encoded-size.js";
import { Code, ShadowError } from "../../common/errors.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { FeedManager } from "../feeds/manager.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { ScoreEngine } from "../risk/score-engine.js";
import type { GraphStore } from "../store/graph-store.js";
import { changesOf, runBoundedWatch } from "./bounded-watch.js";
import { feedStatuses } from "./feed-statuses.js";
import { MAX_PAGE_BYTES, pageOf } from "./pages.js";
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
      const id = req.container === "" ? "" : findGraph(store, req.container).containerId;
      if (id !== "") list = list.filter((s) => s.containerId === id);
      const page = pageOf(list, { key: (s) => [s.containerId], size: (s) => encodedSize(ContainerScoresSchema, s), query: `scores ${req.node} ${id}` }, req);
      return create(ListScoresResponseSchema, { containers: page.items, nextPageToken: page.nextPageToken });
    }),
    watchScores: serverStreamHandler(m.watchScores, async (req, call) => {
      const wanted = (node: string) => req.node === "" || node === req.node;
      const upsert = (s: ContainerScores) => create(ScoreEventSchema, { type: ScoreEvent_Type.UPSERT, containerId: s.containerId, scores: s });
      await runBoundedWatch<ScoreEvent>(call, {
        kind: "scores",
        metrics,
        size: (e) => 80 + (e.scores !== undefined ? encodedSize(ContainerScoresSchema, e.scores) : 0),
        ...changesOf(scores, wanted, upsert, (id) => create(ScoreEventSchema, { type: ScoreEvent_Type.DELETE, containerId: id })),
        snapshotDone: () => create(ScoreEventSchema, { type: ScoreEvent_Type.SNAPSHOT_DONE }),
        resync: () => create(ScoreEventSchema, { type: ScoreEvent_Type.RESYNC }),
      });
    }),
    getVulns: unaryHandler(m.getVulns, async (req) => {
      const g = findGraph(store, req.container);
      const s = scores.get(g.containerId) ?? scores.recompute(g.containerId);
      const inv = scores.inventory(g.imageId);
      const mt = scores.matches(g.imageId);
      const page = pageOf(
        mt?.matches ?? [],
        { key: (v) => [v.id, v.packageType, v.package, v.installedVersion, v.layerId], size: (v) => encodedSize(VulnMatchSchema, v), query: `vulns ${g.containerId} ${g.imageId}` },
        req,
      );
      return create(GetVulnsResponseSchema, {
        ...(s !== undefined ? { scores: s } : {}),
        matches: page.items,
        nextPageToken: page.nextPageToken,
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
      // The graph and the inventory's other fields come with every page: the packages get the rest.
      const rest = encodedSize(LayerGraphSchema, g) + toBinary(ImageInventorySchema, create(ImageInventorySchema, { ...inv, packages: [] })).length;
      const page = pageOf(
        inv.packages,
        {
          key: (p) => [p.type, p.name, p.version, p.path, p.layerId],
          size: (p) => encodedSize(PackageSchema, p),
          query: `inventory ${g.containerId} ${g.imageId}`,
          maxBytes: Math.max(MAX_PAGE_BYTES / 8, MAX_PAGE_BYTES - rest),
        },
        req,
      );
      return create(GetInventoryResponseSchema, { graph: g, inventory: { ...inv, packages: page.items }, nextPageToken: page.nextPageToken });
    }),
    listFeeds: unaryHandler(m.listFeeds, async (req) => {
      const page = pageOf(feedStatuses(feeds), { key: (f) => [f.name], size: (f) => encodedSize(FeedStatusSchema, f), query: "feeds" }, req);
      return create(ListFeedsResponseSchema, { feeds: page.items, nextPageToken: page.nextPageToken });
    }),
  };
}
