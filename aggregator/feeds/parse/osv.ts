/**
 * OSV records (schema: ossf/osv-schema docs/schema.md) from a directory export, one file, or an
 * osv.dev `<ecosystem>/all.zip`, for the ecosystems container images are scanned against.
 */
import { rangeProblems, type OsvAffected as EvalAffected, type OsvEvent, type OsvRange } from "../../vulns/osv-eval.js";
import { cvss31BaseScore, cvss40BaseVector } from "../../vulns/cvss.js";
import { schemeFor } from "../../vulns/versions/index.js";
import { createReadStream } from "node:fs";
import { open, readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import type { Readable } from "node:stream";
import { errnoCode } from "../../../common/errors.js";
import {
  type FeedItem,
  type FeedStream,
  type StatsCounter,
  FeedFormatError,
  MAX_RECORD_BYTES,
  RecordError,
  arrayField,
  boundedString,
  dateField,
  feedStream,
  isObject,
  objectOf,
  parseDate,
  reject,
  stringField,
  validated,
} from "./types.js";
import { fromFrame } from "../decode/frame-item.js";
import { decoded } from "../decode/gzip-sniff.js";
import { jsonFrames } from "../decode/json-framer.js";
import { lines } from "../decode/line-splitter.js";
import { peekLine } from "../decode/peek-line.js";
import { spool } from "../decode/temp-spool.js";
import { zipEntries } from "../decode/zip-reader.js";

export interface OsvSeverity {
  type: string;
  score: string;
}

export type { OsvEvent, OsvRange } from "../../vulns/osv-eval.js";

export interface OsvAffected extends EvalAffected {
  /** As given, e.g. "Debian:12", "Ubuntu:14.04:LTS", "Alpine:v3.19", "npm", "PyPI". */
  ecosystem: string;
  /** As given; for Debian and Ubuntu the source package. */
  name: string;
  purl?: string;
  /** Binary package names built from the source package (Ubuntu's `ecosystem_specific.binaries`). */
  binaries?: string[];
  severity?: OsvSeverity[];
}

export interface OsvRecord {
  id: string;
  modified: string;
  published?: string;
  /** Set on a withdrawn record, which is still yielded so that the store drops its earlier version. */
  withdrawn?: string;
  aliases: string[];
  summary?: string;
  severity: OsvSeverity[];
  affected: OsvAffected[];
  /** The first CVSS_V3 vector, at record level or else in an affected entry. */
  cvss3?: string;
}

/** The part of an ecosystem before the first ':' that we match images against. */
export const SUPPORTED_ECOSYSTEMS: ReadonlySet<string> = new Set(["Debian", "Ubuntu", "Alpine", "npm", "PyPI"]);
const RANGE_TYPES = new Set(["ECOSYSTEM", "SEMVER", "GIT"]);
const EVENT_KEYS = ["introduced", "fixed", "last_affected", "limit"] as const;
const MAX_ID = 128;
const MAX_VERSION = 256;

/** Parts of a kept record that were dropped, counted through `drop` by these reasons. */
const OSV_DROPS = {
  ecosystem: "unknown ecosystem",
  /** A CVSS_V3 or CVSS_V4 severity whose vector breaks its version's grammar (cvss.ts). */
  vector: "invalid cvss vector",
  /** A range with an event its ecosystem cannot parse (or malformed): it could match wrongly. */
  range: "unparseable version",
} as const;

type Drop = (reason: string, n: number) => void;

/**
 * Checks one OSV record. Dropped, and counted through `drop` by an `OSV_DROPS` reason when the
 * record is kept: affected entries of other ecosystems, severities with an invalid CVSS vector,
 * and ranges with a version their ecosystem cannot parse. `versions[]` entries are kept whatever
 * the ecosystem makes of them: the OSV rule compares them as exact strings. A record left with no
 * supported entry, or with nothing to match because every range was dropped, is rejected with
 * that reason, unless it is withdrawn.
 */
export function parseOsvRecord(json: unknown, drop?: Drop): FeedItem<OsvRecord> {
  const idOf = (j: unknown): string | undefined => (isObject(j) && typeof j.id === "string" && j.id !== "" ? j.id.slice(0, MAX_ID) : undefined);
  return validated(json, idOf, (j) => checkRecord(j, drop));
}

function checkRecord(json: unknown, drop?: Drop): OsvRecord {
  // Counted only once the record is known to be kept.
  const dropped = new Map<string, number>();
  const note: Drop = (reason, n) => void dropped.set(reason, (dropped.get(reason) ?? 0) + n);
  const o = objectOf(json, "record");
  if (typeof o.id !== "string" || o.id === "") throw new RecordError("missing id", "id is missing or not a string");
  if (o.id.length > MAX_ID) throw new RecordError("invalid id", `id has ${o.id.length} characters (limit ${MAX_ID})`);
  const record: OsvRecord = {
    id: o.id,
    modified: dateField(o, "modified", { required: true }),
    aliases: arrayField(o, "aliases").map((a, k) => boundedString(a, `aliases[${k}]`, MAX_ID)),
    severity: severities(o, "severity", note),
    affected: [],
  };
  const published = dateField(o, "published");
  const withdrawn = dateField(o, "withdrawn");
  const summary = stringField(o, "summary");
  if (published !== undefined) record.published = published;
  if (withdrawn !== undefined) record.withdrawn = withdrawn;
  if (summary !== undefined) record.summary = summary;

  const all = arrayField(o, "affected");
  const problems: string[] = [];
  for (const [k, a] of all.entries()) {
    const entry = objectOf(a, `affected[${k}]`);
    const pkg = entry.package;
    const ecosystem = isObject(pkg) && typeof pkg.ecosystem === "string" ? pkg.ecosystem : "";
    if (!SUPPORTED_ECOSYSTEMS.has(ecosystem.split(":", 1)[0]!)) continue;
    record.affected.push(checkAffected(entry, pkg as Record<string, unknown>, k, problems, note));
  }
  const unsupported = all.length - record.affected.length;
  if (record.affected.length === 0 && withdrawn === undefined) {
    if (unsupported > 0) throw new RecordError(OSV_DROPS.ecosystem, `no affected package in ${[...SUPPORTED_ECOSYSTEMS].join(", ")}`);
    throw new RecordError("no affected package", "affected is empty");
  }
  // Every range dropped and no version listed: the record could only ever match nothing.
  if (problems.length > 0 && withdrawn === undefined && record.affected.every((a) => a.ranges.length === 0 && a.versions.length === 0)) {
    throw new RecordError(OSV_DROPS.range, problems[0]!);
  }

  const cvss3 = [record.severity, ...record.affected.map((a) => a.severity ?? [])].flat().find((s) => s.type === "CVSS_V3");
  if (cvss3 !== undefined) record.cvss3 = cvss3.score;
  if (unsupported > 0) note(OSV_DROPS.ecosystem, unsupported);
  if (problems.length > 0) note(OSV_DROPS.range, problems.length);
  if (drop !== undefined) for (const [reason, n] of dropped) drop(reason, n);
  return record;
}

/** One entry of a supported ecosystem; ranges its ecosystem cannot evaluate are left out, with their first problem added to `problems`. */
function checkAffected(a: Record<string, unknown>, pkg: Record<string, unknown>, k: number, problems: string[], note: Drop): OsvAffected {
  const at = `affected[${k}]`;
  const name = stringField(pkg, "name", { required: true, max: 256 });
  if (name === "") throw new RecordError("missing field", `${at}.package.name is empty`);
  const ecosystem = boundedString(pkg.ecosystem, `${at}.package.ecosystem`, 128);
  const scheme = schemeFor(ecosystem);
  const ranges: OsvRange[] = [];
  for (const [n, r] of arrayField(a, "ranges").entries()) {
    const range = checkRange(r, `${at}.ranges[${n}]`);
    const found = scheme === undefined ? [] : rangeProblems(range, n, scheme);
    if (found.length === 0) ranges.push(range);
    else problems.push(`${ecosystem} ${name}: ${found[0]!}`);
  }
  const affected: OsvAffected = {
    ecosystem,
    name,
    ranges,
    versions: arrayField(a, "versions").map((v, n) => boundedString(v, `${at}.versions[${n}]`, MAX_VERSION)),
  };
  const purl = stringField(pkg, "purl", { max: 1024 });
  if (purl !== undefined) affected.purl = purl;
  const binaries = binariesOf(a.ecosystem_specific, at);
  if (binaries !== undefined) affected.binaries = binaries;
  if (a.severity !== undefined) affected.severity = severities(a, "severity", note);
  return affected;
}

function checkRange(r: unknown, at: string): OsvRange {
  const o = objectOf(r, at);
  if (typeof o.type !== "string" || !RANGE_TYPES.has(o.type)) {
    throw new RecordError("invalid range", `${at}.type ${JSON.stringify(o.type)} is not ECOSYSTEM, SEMVER or GIT`);
  }
  const events = arrayField(o, "events").map((e, n) => {
    const ev = objectOf(e, `${at}.events[${n}]`);
    const out: OsvEvent = {};
    for (const key of EVENT_KEYS) {
      const v = stringField(ev, key, { max: MAX_VERSION });
      if (v !== undefined) out[key] = v;
    }
    if (Object.keys(out).length === 0) throw new RecordError("invalid range", `${at}.events[${n}] has no known event`);
    return out;
  });
  if (events.length === 0) throw new RecordError("invalid range", `${at} has no events`);
  return { type: o.type as OsvRange["type"], events };
}

/** The severities; a CVSS_V3 or CVSS_V4 one whose vector breaks its version's grammar is left out (counted). */
function severities(o: Record<string, unknown>, key: string, note: Drop): OsvSeverity[] {
  const out: OsvSeverity[] = [];
  for (const [n, s] of arrayField(o, key).entries()) {
    const sev = objectOf(s, `${key}[${n}]`);
    const type = stringField(sev, "type", { required: true, max: 64 });
    const score = stringField(sev, "score", { required: true, max: 1024 });
    const valid = type === "CVSS_V3" ? cvss31BaseScore(score) !== undefined : type === "CVSS_V4" ? cvss40BaseVector(score) !== undefined : true;
    if (valid) out.push({ type, score });
    else note(OSV_DROPS.vector, 1);
  }
  return out;
}

/**
 * Binary package names from `ecosystem_specific.binaries`, whose shape varies by exporter: names,
 * `{binary_name, binary_version}` objects, or (Ubuntu) objects mapping name to fixed version.
 */
function binariesOf(specific: unknown, at: string): string[] | undefined {
  if (!isObject(specific) || specific.binaries === undefined) return undefined;
  const list = specific.binaries;
  if (!Array.isArray(list)) throw new RecordError("invalid field", `${at}.ecosystem_specific.binaries is not an array`);
  const names = new Set<string>();
  for (const b of list) {
    if (typeof b === "string") names.add(boundedString(b, `${at} binary`, 256));
    else if (isObject(b) && b.binary_name !== undefined) names.add(boundedString(b.binary_name, `${at} binary_name`, 256));
    else if (isObject(b)) for (const name of Object.keys(b)) names.add(boundedString(name, `${at} binary`, 256));
    else throw new RecordError("invalid field", `${at}.ecosystem_specific.binaries holds a ${typeof b}`);
  }
  return [...names];
}

// ---- sources ----

/**
 * Every record of a source: a directory of *.json (recursive; a bad file is one rejection), a
 * single file (plain or gzipped; a structural failure ends the parse), or an all.zip (a bad entry
 * is one rejection; entries are read in memory only). See `deduplicated` for repeated ids.
 */
export function readOsvSource(path: string): FeedStream<OsvRecord> {
  return feedStream({}, (counter) => deduplicated(sourceRecords(path, counter), counter), true);
}

/** Records from a stream: a JSON document, an array of records or JSON lines (`json`), or an all.zip (`zip`, spooled to a temporary file). */
export function parseOsvStream(input: Readable, hint: "json" | "zip"): FeedStream<OsvRecord> {
  return feedStream(
    {},
    (counter) => deduplicated(hint === "zip" ? zipStreamRecords(input, counter) : jsonRecords(decoded(input), "osv", counter), counter),
    true,
  );
}

async function* sourceRecords(path: string, counter: StatsCounter): AsyncGenerator<FeedItem<OsvRecord>> {
  if ((await stat(path)).isDirectory()) {
    for await (const file of jsonFiles(path)) yield* fileRecords(file, relative(path, file), counter);
    return;
  }
  const magic = Buffer.alloc(4);
  const fh = await open(path);
  try {
    await fh.read(magic, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (magic.toString("latin1") === "PK\x03\x04" || magic.toString("latin1") === "PK\x05\x06") yield* zipRecords(path, counter);
  else yield* jsonRecords(decoded(createReadStream(path)), path, counter);
}

async function* fileRecords(file: string, label: string, counter: StatsCounter): AsyncGenerator<FeedItem<OsvRecord>> {
  try {
    yield* jsonRecords(decoded(createReadStream(file)), label, counter);
  } catch (err: unknown) {
    if (err instanceof FeedFormatError) yield reject(err.reason, err.message, undefined, label);
    else if (errnoCode(err) !== undefined) yield reject("unreadable", (err as Error).message, undefined, label);
    else throw err;
  }
}

/** *.json and *.json.gz below `dir`, in name order so that runs are repeatable. */
async function* jsonFiles(dir: string): AsyncGenerator<string> {
  const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* jsonFiles(p);
    else if (e.isFile() && /\.json(\.gz)?$/i.test(e.name)) yield p;
  }
}

async function* zipStreamRecords(input: Readable, counter: StatsCounter): AsyncGenerator<FeedItem<OsvRecord>> {
  const spooled = await spool(decoded(input), "shadowlayer-osv-");
  try {
    yield* zipRecords(spooled.path, counter);
  } finally {
    await spooled.remove();
  }
}

async function* zipRecords(path: string, counter: StatsCounter): AsyncGenerator<FeedItem<OsvRecord>> {
  const drop = (reason: string, n: number): void => counter.drop(reason, n);
  for await (const entry of zipEntries(path, (name) => /\.json$/i.test(name), MAX_RECORD_BYTES)) {
    if (entry.ok === "skipped") counter.drop("not a json entry", 1);
    else if (!entry.ok) yield reject(entry.reason, entry.detail, undefined, entry.name);
    else {
      // osv.dev entries are one record each: parse in one go, and frame only what does not parse.
      let json: unknown;
      try {
        json = JSON.parse(entry.data.toString("utf8"));
      } catch {
        yield* bufferRecords(entry.data, entry.name, counter);
        continue;
      }
      if (Array.isArray(json)) for (const r of json) yield withAt(parseOsvRecord(r, drop), entry.name);
      else {
        const item = withAt(parseOsvRecord(json, drop), entry.name);
        if (item.ok) item.raw = entry.data;
        yield item;
      }
    }
  }
}

async function* bufferRecords(data: Buffer, label: string, counter: StatsCounter): AsyncGenerator<FeedItem<OsvRecord>> {
  try {
    yield* jsonRecords(
      (async function* () {
        yield data;
      })(),
      label,
      counter,
    );
  } catch (err: unknown) {
    if (!(err instanceof FeedFormatError)) throw err;
    yield reject(err.reason, err.message, undefined, label);
  }
}

function withAt<T>(item: FeedItem<T>, at: string): FeedItem<T> {
  if (!item.ok) item.rejection.at = at;
  return item;
}

/**
 * Records of a JSON text: JSON lines when the first line is a whole object (a bad line is one
 * rejection), else a document (one record, an array of them, or several concatenated).
 */
async function* jsonRecords(bytes: AsyncIterable<Buffer>, label: string, counter: StatsCounter): AsyncGenerator<FeedItem<OsvRecord>> {
  const drop = (reason: string, n: number): void => counter.drop(reason, n);
  const check = (j: unknown): FeedItem<OsvRecord> => parseOsvRecord(j, drop);
  const { first, bytes: all } = await peekLine(bytes);
  const head = first.trim();
  if (!(head.startsWith("{") && head.endsWith("}"))) {
    for await (const frame of jsonFrames(all, { label })) yield fromFrame(frame, check, label);
    return;
  }
  for await (const { line, text } of lines(all, MAX_RECORD_BYTES)) {
    const at = `${label} line ${line}`;
    if (text === null) {
      yield reject("too large", `line over ${MAX_RECORD_BYTES} bytes`, undefined, at);
      continue;
    }
    if (text.trim() === "") continue;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err: unknown) {
      yield reject("invalid json", (err as Error).message, undefined, at);
      continue;
    }
    yield withAt(check(json), at);
  }
}

/**
 * One record per id: the copy with the latest `modified` wins and the other counts as "duplicate
 * id". Sources are streamed, so when a later copy is newer it is yielded too and supersedes the
 * one yielded before (consumers store by id, as they must for withdrawn records anyway); an older
 * or equal later copy is rejected and not yielded.
 */
/** Also counts every item it passes on (the stream is built self-counting). */
async function* deduplicated(items: AsyncIterable<FeedItem<OsvRecord>>, counter: StatsCounter): AsyncGenerator<FeedItem<OsvRecord>> {
  const latest = new Map<string, string>();
  for await (const item of items) {
    if (!item.ok) {
      counter.count(item);
      yield item;
      continue;
    }
    const { id, modified } = item.record;
    const prev = latest.get(id);
    if (prev !== undefined && parseDate(modified) <= parseDate(prev)) {
      const dup = reject<OsvRecord>("duplicate id", `a copy modified ${prev} came first; this one is modified ${modified}`, id);
      counter.count(dup);
      yield dup;
      continue;
    }
    if (prev !== undefined) {
      counter.supersede({ id, reason: "duplicate id", detail: `a copy modified ${prev} was superseded by one modified ${modified}` });
    }
    latest.set(id, modified);
    counter.count(item);
    yield item;
  }
}
