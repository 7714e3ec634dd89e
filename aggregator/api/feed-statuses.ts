/**
 * Each feed's status as ListFeeds and RefreshFeeds report it: state, counts, rejections by reason
 * and how stale the last good data is.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { FeedStatusSchema, type FeedStatus } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { FeedManager } from "../feeds/manager.js";

/** A feed's data turns stale after this long without a successful check, unless it says otherwise. */
const DEFAULT_MAX_AGE_MS = 86_400_000;

export function feedStatuses(feeds: FeedManager, now = Date.now()): FeedStatus[] {
  return feeds.states().map(({ config, meta, demo }) => {
    const last = meta.lastSuccess === "" ? undefined : new Date(meta.lastSuccess);
    const maxAge = config.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
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
      droppedByReason: Object.fromEntries(Object.entries(meta.dropped ?? {}).map(([k, v]) => [k, BigInt(v)])),
      records: BigInt(meta.records),
      ageSeconds: age,
      maxAgeSeconds: maxAge / 1000,
      stale: last === undefined || age * 1000 > maxAge,
      etag: meta.etag,
      samples: meta.samples,
      demo,
    });
  });
}
