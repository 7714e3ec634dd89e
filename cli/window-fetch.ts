/**
 * Windows of a time range from the aggregator, page after page over the whole range
 * (QueryService.ListWindows with since/until), each with its container's image and layer kinds
 * while the aggregator still has the container's graph. Used by `windows` and `train`.
 */
import * as grpc from "@grpc/grpc-js";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { QueryService } from "../proto/gen/shadowlayer/v1/query_pb.js";
import type { WindowSummary } from "../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { Code, ShadowError } from "../common/errors.js";
import { callUnary } from "../common/grpc.js";
import { connect } from "./client.js";
import type { ClientFlags } from "./options.js";
import { containerContext, type ContainerContext } from "./window-export.js";

/** Windows per page asked for (the aggregator still stops a page at its byte bound). */
const PAGE_SIZE = 10_000;
/** Pages followed at most: 100 million windows. */
const MAX_PAGES = 10_000;

export interface WindowQuery {
  since: Date;
  until: Date;
  container?: string | undefined;
  node?: string | undefined;
}

export interface FetchedWindow {
  window: WindowSummary;
  ctx: ContainerContext | undefined;
}

/** Yields the range's windows, oldest end first; `progress` after each page (windows so far, the last one's end). */
export async function* fetchWindows(flags: ClientFlags, q: WindowQuery, progress?: (count: number, lastEnd: Date | undefined) => void): AsyncGenerator<FetchedWindow> {
  const c = await connect(flags, QueryService);
  const contexts = new Map<string, ContainerContext | undefined>();
  const contextOf = async (containerId: string): Promise<ContainerContext | undefined> => {
    if (contexts.has(containerId)) return contexts.get(containerId);
    let ctx: ContainerContext | undefined;
    try {
      ctx = containerContext(await callUnary(c.client, QueryService.method.getLayerGraph, { container: containerId }));
    } catch (err) {
      // A container whose graph is gone: its windows are exported without an image.
      if ((err as Partial<grpc.ServiceError>).code !== grpc.status.NOT_FOUND) c.explain(err);
    }
    contexts.set(containerId, ctx);
    return ctx;
  };
  try {
    let token = "";
    let count = 0;
    for (let pages = 0; pages < MAX_PAGES; pages++) {
      const page = await callUnary(c.client, QueryService.method.listWindows, {
        since: timestampFromDate(q.since),
        until: timestampFromDate(q.until),
        container: q.container ?? "",
        node: q.node ?? "",
        pageSize: PAGE_SIZE,
        pageToken: token,
      }).catch(c.explain);
      let last: Date | undefined;
      for (const s of page.windows) {
        const w = s.window;
        if (w === undefined) continue;
        count++;
        if (w.end !== undefined) last = timestampDate(w.end);
        yield { window: w, ctx: await contextOf(w.containerId) };
      }
      progress?.(count, last);
      if (page.nextPageToken === "") return;
      if (page.nextPageToken === token) throw new ShadowError(Code.Internal, `the aggregator at ${c.address} sent the same page token twice`);
      token = page.nextPageToken;
    }
    throw new ShadowError(Code.FailedPrecondition, `more than ${MAX_PAGES} pages of windows: narrow --since/--until`);
  } finally {
    c.client.close();
  }
}
