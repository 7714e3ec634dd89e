/**
 * Opening a feed's source as a byte stream, or learning that it has not changed since the last
 * read: files and directories by a stamp of their mtime and size, URLs by a conditional GET
 * (If-None-Match / If-Modified-Since).
 */
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { Code, ShadowError } from "../../common/errors.js";
import { checkRedirect, isUrl } from "./feed-config.js";

/** Redirects followed at most, each checked before it is (fetch alone would follow 20, unchecked). */
export const MAX_REDIRECTS = 5;

/** How the bytes are laid out: one JSON document, a zip archive, or a directory read by path. */
export type SourceHint = "json" | "zip" | "dir";

export interface OpenedSource {
  /** Empty for a directory (its reader walks it by path). */
  stream: Readable;
  etag: string;
  lastModified: string;
  fileStamp: string;
  hint: SourceHint;
}

/** What the last good read left: its generation (0: none yet) and the source's validators then. */
export interface LastRead {
  gen: number;
  etag: string;
  lastModified: string;
  fileStamp: string;
}

/**
 * Opens `source`, or answers "unchanged" when it says it did not change since `last` (unless
 * `force`). Throws a ShadowError when the source cannot be read at all.
 */
export async function openFeedSource(source: string, last: LastRead, force: boolean): Promise<OpenedSource | "unchanged"> {
  if (!isUrl(source)) {
    const st = await stat(source).catch((err: unknown) => {
      throw new ShadowError(Code.NotFound, `feed source ${source} cannot be read (${err instanceof Error ? err.message : String(err)})`);
    });
    const stamp = st.isDirectory() ? await dirStamp(source) : `${st.mtimeMs}:${st.size}:${st.ino}`;
    if (!force && stamp === last.fileStamp && last.gen > 0) return "unchanged";
    if (st.isDirectory()) return { stream: Readable.from([]), etag: "", lastModified: "", fileStamp: stamp, hint: "dir" };
    return { stream: createReadStream(source), etag: "", lastModified: "", fileStamp: stamp, hint: source.endsWith(".zip") ? "zip" : "json" };
  }
  const headers: Record<string, string> = {};
  if (last.gen > 0 && !force) {
    if (last.etag !== "") headers["if-none-match"] = last.etag;
    if (last.lastModified !== "") headers["if-modified-since"] = last.lastModified;
  }
  const res = await fetchChecked(source, headers);
  if (res.status === 304) return "unchanged";
  if (!res.ok || res.body === null) throw new ShadowError(Code.FailedPrecondition, `${source} answered HTTP ${res.status} ${res.statusText}`);
  const path = new URL(source).pathname;
  return {
    stream: Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>),
    etag: res.headers.get("etag") ?? "",
    lastModified: res.headers.get("last-modified") ?? "",
    fileStamp: "",
    hint: path.endsWith(".zip") ? "zip" : "json",
  };
}

/** GETs `source`, following redirects by hand so that each is checked before anything dials it. */
async function fetchChecked(source: string, headers: Record<string, string>): Promise<Response> {
  const signal = AbortSignal.timeout(60_000);
  let url = source;
  for (let hops = 0; ; hops++) {
    const res = await fetch(url, { headers, redirect: "manual", signal }).catch((err: unknown) => {
      const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
      throw new ShadowError(Code.FailedPrecondition, `${url} did not answer (${err instanceof Error ? err.message : String(err)}${cause})`);
    });
    const location = res.headers.get("location");
    if (res.status < 300 || res.status > 399 || res.status === 304 || location === null) return res;
    await res.body?.cancel();
    if (hops === MAX_REDIRECTS) throw new ShadowError(Code.FailedPrecondition, `feed source ${source}: more than ${MAX_REDIRECTS} redirects`);
    const next = URL.parse(location, url)?.href;
    if (next === undefined) throw new ShadowError(Code.FailedPrecondition, `feed source ${source} redirected to ${JSON.stringify(location)}, not a URL`);
    checkRedirect(source, url, next);
    url = next;
  }
}

/** A directory's change stamp: its files' count and newest mtime (a file edited in place counts). */
async function dirStamp(dir: string): Promise<string> {
  let count = 0;
  let newest = 0;
  let bytes = 0;
  const walk = async (d: string, depth: number): Promise<void> => {
    if (depth > 8) return;
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory()) await walk(p, depth + 1);
      else if (e.isFile()) {
        const st = await stat(p).catch(() => undefined);
        if (st === undefined) continue;
        count++;
        bytes += st.size;
        if (st.mtimeMs > newest) newest = st.mtimeMs;
      }
    }
  };
  await walk(dir, 0);
  return `dir:${count}:${bytes}:${newest}`;
}
