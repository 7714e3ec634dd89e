/**
 * The threat side of QueryService (scores, vulnerabilities, inventories, feeds) and the
 * AdminService (policies, feed refresh). Admin calls need a client certificate: an agent's
 * certificate may publish its node's state but never change how the aggregator decides.
 */
import type * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  AdminService,
  DeletePolicyResponseSchema,
  GetInventoryResponseSchema,
  GetVulnsResponseSchema,
  ListFeedsResponseSchema,
  ListPoliciesResponseSchema,
  ListScoresResponseSchema,
  QueryService,
  ScoreEvent_Type,
  ScoreEventSchema,
} from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { FeedStatusSchema, type ContainerScores, type FeedStatus } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { peerIdentity } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { FeedManager } from "../feeds/manager.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { ScoreEngine } from "../scores/engine.js";
import type { GraphStore } from "../store/graph-store.js";
import { findGraph } from "./query-service.js";

export interface VulnsDeps {
  store: GraphStore;
  scores: ScoreEngine;
  feeds: FeedManager;
  metrics: AggregatorMetrics;
}

const DAY = 86_400_000;

export function feedStatuses(feeds: FeedManager, now = Date.now()): FeedStatus[] {
  return feeds.states().map(({ config, meta }) => {
    const last = meta.lastSuccess === "" ? undefined : new Date(meta.lastSuccess);
    const maxAge = config.maxAgeMs ?? DAY;
    const age = last === undefined ? -1 : (now - last.getTime()) / 1000;
    return create(FeedStatusSchema, {
      name: config.name,
      kind: config.kind,
      source: config.source,
      ...(meta.lastAttempt !== "" ? { lastAttempt: timestampFromDate(new Date(meta.lastAttempt)) } : {}),
      ...(last !== undefined ? { lastSuccess: timestampFromDate(last) } : {}),
      state: meta.state,
      error: meta.error,
      accepted: BigInt(meta.accepted),
      rejected: BigInt(meta.rejected),
      rejectedByReason: Object.fromEntries(Object.entries(meta.reasons).map(([k, v]) => [k, BigInt(v)])),
      records: BigInt(meta.records),
      ageSeconds: age,
      maxAgeSeconds: maxAge / 1000,
      stale: last === undefined || age * 1000 > maxAge,
      etag: meta.etag,
      samples: meta.samples,
    });
  });
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

export function adminImpl({ scores, feeds }: VulnsDeps, requireCert: boolean): grpc.UntypedServiceImplementation {
  const m = AdminService.method;
  const admin = (call: grpc.ServerUnaryCall<unknown, unknown>) => {
    if (!requireCert) return;
    const who = peerIdentity(call.getAuthContext()?.sslPeerCertificate?.subject);
    if (who === undefined || who.role !== "client") throw new ShadowError(Code.PermissionDenied, "admin calls need a client certificate (agents cannot change policies or feeds)");
  };
  return {
    listPolicies: unaryHandler(m.listPolicies, async (_req, call) => {
      admin(call);
      return create(ListPoliciesResponseSchema, { policies: scores.listPolicies() });
    }),
    setPolicy: unaryHandler(m.setPolicy, async (req, call) => {
      admin(call);
      if (req.policy === undefined) throw new ShadowError(Code.InvalidArgument, "policy is required");
      return scores.setPolicy(req.policy);
    }),
    deletePolicy: unaryHandler(m.deletePolicy, async (req, call) => {
      admin(call);
      if (req.name === "default") throw new ShadowError(Code.InvalidArgument, "the default policy cannot be deleted (change its thresholds instead)");
      await scores.deletePolicy(req.name);
      return create(DeletePolicyResponseSchema, {});
    }),
    refreshFeeds: unaryHandler(m.refreshFeeds, async (req, call) => {
      admin(call);
      await feeds.refresh(req.name);
      return create(ListFeedsResponseSchema, { feeds: feedStatuses(feeds) });
    }),
  };
}
