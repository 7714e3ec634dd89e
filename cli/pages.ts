/**
 * Every page of a paged List call, on one connection: the aggregator answers at most a page per
 * call (so that no reply exceeds the message limit) and the CLI lists everything.
 */
import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { Code, ShadowError } from "../common/errors.js";
import { callUnary } from "../common/grpc.js";
import { connect } from "./client.js";
import type { ClientFlags } from "./options.js";

/** As many as the aggregator takes per page; it still stops a page at its byte bound. */
const PAGE_SIZE = 10_000;

type Paged = { pageSize?: number; pageToken?: string };

/**
 * Calls `method` with `req` and each next page token until the last page; `items` picks a page's
 * list. `first` is the first reply (for what every page repeats, such as GetVulns' scores).
 */
export async function listAll<I extends DescMessage, O extends DescMessage, T>(
  flags: ClientFlags,
  method: DescMethod & { input: I; output: O },
  req: MessageInitShape<I> & Paged,
  items: (page: MessageShape<O>) => readonly T[],
): Promise<{ first: MessageShape<O>; items: T[] }> {
  const c = await connect(flags, method.parent);
  try {
    const all: T[] = [];
    const seen = new Set<string>();
    let first: MessageShape<O> | undefined;
    let token = "";
    do {
      const page = await callUnary(c.client, method, { ...req, pageSize: PAGE_SIZE, pageToken: token }).catch(c.explain);
      first ??= page;
      all.push(...items(page));
      token = (page as { nextPageToken?: string }).nextPageToken ?? "";
      // A token seen before would loop for ever: an aggregator that does not page as it should.
      if (seen.has(token)) throw new ShadowError(Code.Internal, `the aggregator at ${c.address} sent the same page token twice`);
      seen.add(token);
    } while (token !== "");
    return { first, items: all };
  } finally {
    c.client.close();
  }
}
