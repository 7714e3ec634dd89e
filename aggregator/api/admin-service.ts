/**
 * AdminService: policies, feed refreshes and feeds added at run time. Only an admin certificate reaches these handlers
 * (authorize.ts): an agent publishes its node's state, a reader reads, neither changes how the
 * aggregator decides.
 */
import type * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AdminService, DeletePolicyResponseSchema, ListFeedsResponseSchema, ListPoliciesResponseSchema } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { PolicySchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { encodedSize } from "../../common/encoded-size.js";
import { Code, ShadowError } from "../../common/errors.js";
import { unaryHandler } from "../../common/grpc.js";
import { addedFeedOf } from "../feeds/added-feeds.js";
import type { FeedManager } from "../feeds/manager.js";
import { DEFAULT_POLICY } from "../risk/policies.js";
import type { ScoreEngine } from "../risk/score-engine.js";
import { feedStatuses } from "./feed-statuses.js";
import { pageOf } from "./pages.js";

export interface AdminDeps {
  scores: ScoreEngine;
  feeds: FeedManager;
}

export function adminImpl({ scores, feeds }: AdminDeps): grpc.UntypedServiceImplementation {
  const m = AdminService.method;
  return {
    listPolicies: unaryHandler(m.listPolicies, async (req) => {
      const page = pageOf(scores.listPolicies(), { key: (p) => [p.name === DEFAULT_POLICY.name ? 1 : 0, p.order, p.name], size: (p) => encodedSize(PolicySchema, p), query: "policies" }, req);
      return create(ListPoliciesResponseSchema, { policies: page.items, nextPageToken: page.nextPageToken });
    }),
    setPolicy: unaryHandler(m.setPolicy, async (req) => {
      if (req.policy === undefined) throw new ShadowError(Code.InvalidArgument, "policy is required");
      return scores.setPolicy(req.policy);
    }),
    deletePolicy: unaryHandler(m.deletePolicy, async (req) => {
      if (req.name === DEFAULT_POLICY.name) throw new ShadowError(Code.InvalidArgument, "the default policy cannot be deleted (change its thresholds instead)");
      await scores.deletePolicy(req.name);
      return create(DeletePolicyResponseSchema, {});
    }),
    refreshFeeds: unaryHandler(m.refreshFeeds, async (req) => {
      await feeds.refresh(req.name, { acceptShrink: req.acceptShrink });
      return create(ListFeedsResponseSchema, { feeds: feedStatuses(feeds) });
    }),
    addFeed: unaryHandler(m.addFeed, async (req) => {
      await feeds.add(addedFeedOf(req));
      return create(ListFeedsResponseSchema, { feeds: feedStatuses(feeds) });
    }),
  };
}
