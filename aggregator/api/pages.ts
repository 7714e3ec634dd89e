/**
 * Pages of the List* replies. Without them one node with 100,000 containers made `containers`
 * and `scores` replies of 10 and 37 MB, over the 4 MiB message limit, so that they failed for
 * everyone. A page holds at most a page size of items (default 1000, at most 10,000) and at most
 * MAX_PAGE_BYTES of them, so no reply reaches the limit whatever the caller asks for.
 *
 * Pages follow a total order by a unique key (keyset pagination): the token names the last key
 * sent, and the next page starts after it. An item that existed for the whole walk is listed
 * exactly once however others come and go meanwhile, which an offset could not promise. The token
 * is opaque to callers and bound to the request's filters.
 */
import { Code, ShadowError } from "../../common/errors.js";

export const DEFAULT_PAGE_SIZE = 1000;
export const MAX_PAGE_SIZE = 10_000;
/** Encoded bytes of a page's items: half the 4 MiB limit leaves room for the rest of a reply. */
export const MAX_PAGE_BYTES = 2 * 1024 * 1024;
/** Longer tokens than any we make are refused before they are decoded. */
const MAX_TOKEN_CHARS = 4096;

/** A position in a listing's order: compared part by part, numbers as numbers, text by code unit. */
export type PageKey = ReadonlyArray<string | number>;

/** What every paged request carries. */
export interface PageRequest {
  pageSize: number;
  pageToken: string;
}

export interface Page<T> {
  items: T[];
  /** Empty on the last page. */
  nextPageToken: string;
}

export function compareKeys(a: PageKey, b: PageKey): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    if (typeof x === "number" && typeof y === "number") return x - y;
    return String(x) < String(y) ? -1 : 1;
  }
  return 0;
}

/** The items a page may hold under the request's page size. */
export function pageSize(req: PageRequest): number {
  return req.pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(req.pageSize, MAX_PAGE_SIZE);
}

/** `query` names the request's filters: a token made for other filters is refused. */
export function encodeToken(query: string, key: PageKey): string {
  return Buffer.from(JSON.stringify({ q: query, k: key })).toString("base64url");
}

/** The key a token names, or undefined for no token (the first page). */
export function decodeToken(query: string, token: string): PageKey | undefined {
  if (token === "") return undefined;
  const bad = (why: string) => new ShadowError(Code.InvalidArgument, `page_token: ${why}; start again without a token`);
  if (token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad("not a token this aggregator made");
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad("not a token this aggregator made");
  }
  const t = parsed as { q?: unknown; k?: unknown };
  if (typeof parsed !== "object" || parsed === null || typeof t.q !== "string" || !Array.isArray(t.k) || !t.k.every((p) => typeof p === "string" || typeof p === "number")) {
    throw bad("not a token this aggregator made");
  }
  if (t.q !== query) throw bad("it belongs to a request with other filters");
  return t.k as PageKey;
}

/** Fills one page from items in key order, `after` the token's key; `more` says whether one is left. */
class PageFiller<T> {
  readonly items: T[] = [];
  private bytes = 0;
  last: PageKey | undefined;

  constructor(
    private readonly limit: number,
    private readonly size: (t: T) => number,
    private readonly maxBytes = MAX_PAGE_BYTES,
  ) {}

  /** Adds `t` unless the page is full (false). A page always takes its first item, however large. */
  add(t: T, key: PageKey): boolean {
    const n = this.size(t) + 8;
    if (this.items.length >= this.limit || (this.items.length > 0 && this.bytes + n > this.maxBytes)) return false;
    this.items.push(t);
    this.bytes += n;
    this.last = key;
    return true;
  }
}

export interface PageOrder<T> {
  /** Unique per item; the page order. */
  key: (t: T) => PageKey;
  /** Encoded bytes of an item. */
  size: (t: T) => number;
  /** The request's filters, which its tokens are bound to. */
  query: string;
  /** Bytes of items per page, when the rest of the reply is large too (default MAX_PAGE_BYTES). */
  maxBytes?: number;
}

/** One page of an in-memory listing (in any order: it is sorted by key here). */
export function pageOf<T>(all: readonly T[], order: PageOrder<T>, req: PageRequest): Page<T> {
  const after = decodeToken(order.query, req.pageToken);
  const keyed = all.map((t) => ({ t, k: order.key(t) })).filter((e) => after === undefined || compareKeys(e.k, after) > 0);
  keyed.sort((a, b) => compareKeys(a.k, b.k));
  const page = new PageFiller(pageSize(req), order.size, order.maxBytes);
  let full = false;
  for (const e of keyed) {
    if (!page.add(e.t, e.k)) {
      full = true;
      break;
    }
  }
  return { items: page.items, nextPageToken: full && page.last !== undefined ? encodeToken(order.query, page.last) : "" };
}

/**
 * One page of a listing read from storage in key order: `entries(after)` yields each item with
 * its key, starting after `after` (from the beginning when undefined), and stops being read once
 * the page is full and one more item shows that another page follows.
 */
export async function pageOfEntries<T>(
  entries: (after: PageKey | undefined) => AsyncIterable<{ key: PageKey; item: T }>,
  order: Omit<PageOrder<T>, "key">,
  req: PageRequest,
): Promise<Page<T>> {
  const after = decodeToken(order.query, req.pageToken);
  const page = new PageFiller(pageSize(req), order.size, order.maxBytes);
  let full = false;
  for await (const e of entries(after)) {
    if (!page.add(e.item, e.key)) {
      full = true;
      break;
    }
  }
  return { items: page.items, nextPageToken: full && page.last !== undefined ? encodeToken(order.query, page.last) : "" };
}
