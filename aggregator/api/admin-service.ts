/**
 * AdminService: policies and feed refreshes. Every call needs a client certificate: an agent's
 * certificate may publish its node's state but never change how the aggregator decides.
 */
import type * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AdminService, DeletePolicyResponseSchema, ListFeedsResponseSchema, ListPoliciesResponseSchema } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { peerIdentity } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import { unaryHandler } from "../../common/grpc.js";
import type { FeedManager } from "../feeds/manager.js";
import { DEFAULT_POLICY } from "../risk/policies.js";
import type { ScoreEngine } from "../risk/score-engine.js";
import { feedStatuses } from "./feed-statuses.js";

export interface AdminDeps {
  scores: ScoreEngine;
  feeds: FeedManager;
}

/** `requireCert` is false only when the aggregator runs without TLS (tests, `--insecure`). */
export function adminImpl({ scores, feeds }: AdminDeps, requireCert: boolean): grpc.UntypedServiceImplementation {
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
      if (req.name === DEFAULT_POLICY.name) throw new ShadowError(Code.InvalidArgument, "the default policy cannot be deleted (change its thresholds instead)");
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
