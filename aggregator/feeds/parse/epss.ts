/** FIRST EPSS scores (https://www.first.org/epss/data_stats): daily CSV, usually gzipped. */
import type { Readable } from "node:stream";
import { type FeedItem, type FeedStream, FeedFormatError, CVE_ID, feedStream, parseDate, reject } from "./types.js";
import { decoded } from "../decode/gzip-sniff.js";
import { lines } from "../decode/line-splitter.js";

export interface EpssRecord {
  cve: string;
  /** Probability of exploitation in the next 30 days, 0..1. */
  epss: number;
  /** Rank among all scored CVEs, 0..1. */
  percentile: number;
}

export interface EpssMeta {
  modelVersion?: string;
  /** As given, e.g. "2025-08-25T00:00:00+0000". */
  scoreDate?: string;
}

// A row is three short fields; anything longer is not an EPSS row.
const MAX_LINE_BYTES = 4096;
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/**
 * Streams the rows of an EPSS CSV. The `#model_version:…,score_date:…` comment is read into
 * `meta()`; the header row is required (its absence means this is not an EPSS file, e.g. an HTML
 * error page) and may order the columns any way.
 */
export function parseEpss(input: Readable): FeedStream<EpssRecord, EpssMeta> {
  const meta: EpssMeta = {};
  return feedStream(meta, async function* () {
    let columns: { cve: number; epss: number; percentile: number } | undefined;
    const seen = new Set<string>();
    for await (const { line, text } of lines(decoded(input), MAX_LINE_BYTES)) {
      const at = `epss line ${line}`;
      if (text === null) {
        yield reject("too large", `line over ${MAX_LINE_BYTES} bytes`, undefined, at);
        continue;
      }
      const t = text.trim();
      if (t === "") continue;
      if (t.startsWith("#")) {
        readComment(t.slice(1), meta);
        continue;
      }
      if (columns === undefined) {
        columns = header(t, line);
        continue;
      }
      yield parseEpssRow(t.split(","), columns, at, seen);
    }
    if (columns === undefined) throw new FeedFormatError("invalid csv", "epss: no 'cve,epss,percentile' header before the end");
  });
}

function readComment(body: string, meta: EpssMeta): void {
  for (const pair of body.split(",")) {
    const colon = pair.indexOf(":");
    if (colon === -1) continue;
    const [key, value] = [pair.slice(0, colon).trim(), pair.slice(colon + 1).trim()];
    if (key === "model_version" && value.length <= 64) meta.modelVersion = value;
    else if (key === "score_date" && !Number.isNaN(parseDate(value))) meta.scoreDate = value;
  }
}

function header(t: string, line: number): { cve: number; epss: number; percentile: number } {
  const names = t.split(",").map((c) => c.trim().toLowerCase());
  const [cve, epss, percentile] = [names.indexOf("cve"), names.indexOf("epss"), names.indexOf("percentile")];
  if (cve === -1 || epss === -1 || percentile === -1) {
    throw new FeedFormatError("invalid csv", `epss: expected the header 'cve,epss,percentile' at line ${line}, got ${JSON.stringify(t.slice(0, 80))}`);
  }
  return { cve, epss, percentile };
}

function parseEpssRow(
  cells: string[],
  col: { cve: number; epss: number; percentile: number },
  at: string,
  seen: Set<string>,
): FeedItem<EpssRecord> {
  const cell = (k: number): string => (cells[k] ?? "").trim();
  const cve = cell(col.cve);
  if (cells.length <= Math.max(col.cve, col.epss, col.percentile)) {
    return reject("invalid row", `${cells.length} columns`, cve || undefined, at);
  }
  if (cve === "") return reject("missing id", "empty cve column", undefined, at);
  if (!CVE_ID.test(cve)) return reject("invalid id", `${JSON.stringify(cve.slice(0, 64))} is not a CVE id`, undefined, at);
  const values: number[] = [];
  for (const name of ["epss", "percentile"] as const) {
    const s = cell(col[name]);
    if (!DECIMAL.test(s)) return reject("not a number", `${name} ${JSON.stringify(s.slice(0, 32))}`, cve, at);
    const v = Number(s);
    if (!(v >= 0 && v <= 1)) return reject("out of range", `${name} ${s} is outside [0, 1]`, cve, at);
    values.push(v);
  }
  if (seen.has(cve)) return reject("duplicate id", "scored earlier in the file", cve, at);
  seen.add(cve);
  return { ok: true, record: { cve, epss: values[0]!, percentile: values[1]! } };
}
