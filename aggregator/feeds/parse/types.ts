import { Code, ShadowError } from "../../../common/errors.js";

/** Why one record was turned away. `reason` is a short class (the key of `ParseStats.reasons`). */
export interface Rejection {
  id?: string;
  reason: string;
  /** The specifics, for a human: which field, what value. */
  detail?: string;
  /** Where in the source: a file or zip entry name, a line, a byte offset. */
  at?: string;
}

export interface ParseStats {
  /** Records yielded with `ok: true` that still stand (a superseded duplicate is moved to `rejected`). */
  accepted: number;
  rejected: number;
  /** Rejection class -> count; sums to `rejected`. */
  reasons: Record<string, number>;
  /** Parts dropped from records that were otherwise kept (an affected entry of an unsupported ecosystem, a malformed metric) -> count. */
  dropped: Record<string, number>;
  /** The first rejections, to show an operator what went wrong. */
  samples: Rejection[];
}

/**
 * `raw`, when set, is the record's source text exactly as read (one osv.dev zip entry): a store
 * may keep those bytes instead of serialising the parsed record again.
 */
export type FeedItem<T> = { ok: true; record: T; raw?: Uint8Array } | { ok: false; rejection: Rejection };

/**
 * A single-use stream of feed items. `stats` is live and final once iteration ends; `meta()` gives
 * the feed's header fields (catalog version, model version, page counters) as far as they were read.
 */
export interface FeedStream<T, M extends object = Record<string, never>> extends AsyncIterable<FeedItem<T>> {
  readonly stats: ParseStats;
  meta(): Readonly<M>;
}

/** Bounds on what one record may carry: a feed is untrusted input and a store row should stay small. */
export const MAX_FIELD_CHARS = 10 * 1024;
export const MAX_RECORD_BYTES = 10 * 1024 * 1024;
const SAMPLE_LIMIT = 20;

/**
 * The whole source is unusable from some point on (not JSON, truncated, no header): the caller keeps
 * the last good data. `reason` is a class like a rejection's; the message says where.
 */
export class FeedFormatError extends ShadowError {
  readonly reason: string;
  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super(Code.InvalidArgument, message, options);
    this.reason = reason;
  }
}

/** Thrown by field checks inside a record validator; turned into a rejection by `validated`. */
export class RecordError extends Error {
  readonly reason: string;
  constructor(reason: string, detail: string) {
    super(detail);
    this.reason = reason;
  }
}

/** Keeps the counters of one parse; the feed stream does the counting, parsers only yield. */
export class StatsCounter {
  readonly stats: ParseStats = { accepted: 0, rejected: 0, reasons: {}, dropped: {}, samples: [] };

  count<T>(item: FeedItem<T>): void {
    if (item.ok) this.stats.accepted++;
    else this.#reject(item.rejection);
  }

  /** A record already yielded as accepted has been replaced by a later one with the same id. */
  supersede(rejection: Rejection): void {
    this.stats.accepted--;
    this.#reject(rejection);
  }

  drop(reason: string, n = 1): void {
    this.stats.dropped[reason] = (this.stats.dropped[reason] ?? 0) + n;
  }

  #reject(r: Rejection): void {
    this.stats.rejected++;
    this.stats.reasons[r.reason] = (this.stats.reasons[r.reason] ?? 0) + 1;
    if (this.stats.samples.length < SAMPLE_LIMIT) this.stats.samples.push(r);
  }
}

/** Wraps a parser's generator so that every item is counted and the stream can be iterated once. */
export function feedStream<T, M extends object>(
  meta: M,
  run: (counter: StatsCounter) => AsyncGenerator<FeedItem<T>>,
  /** `run` counts each item itself (one async layer less per record on the hot OSV path). */
  selfCounting = false,
): FeedStream<T, M> {
  const counter = new StatsCounter();
  let started = false;
  return {
    stats: counter.stats,
    meta: () => meta,
    [Symbol.asyncIterator]: () => {
      if (started) throw new ShadowError(Code.FailedPrecondition, "a feed stream can be iterated only once");
      started = true;
      return selfCounting ? run(counter) : counted(run(counter), counter);
    },
  };
}

async function* counted<T>(items: AsyncGenerator<FeedItem<T>>, counter: StatsCounter): AsyncGenerator<FeedItem<T>> {
  for await (const item of items) {
    counter.count(item);
    yield item;
  }
}

export function reject<T>(reason: string, detail?: string, id?: string, at?: string): FeedItem<T> {
  const rejection: Rejection = { reason };
  if (id !== undefined) rejection.id = id;
  if (detail !== undefined) rejection.detail = detail;
  if (at !== undefined) rejection.at = at;
  return { ok: false, rejection };
}

/** Runs a validator that throws RecordError, turning the throw into a rejection that names the id if known. */
export function validated<T>(json: unknown, idOf: (json: unknown) => string | undefined, check: (json: unknown) => T): FeedItem<T> {
  try {
    return { ok: true, record: check(json) };
  } catch (err: unknown) {
    if (!(err instanceof RecordError)) throw err;
    return reject(err.reason, err.message, idOf(json));
  }
}

// ---- field checks: each returns the typed value or throws RecordError ----

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function objectOf(v: unknown, what: string): Record<string, unknown> {
  if (v === undefined) throw new RecordError("missing field", `${what} is missing`);
  if (!isObject(v)) throw new RecordError("not an object", `${what} is ${describe(v)}, not an object`);
  return v;
}

export function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return `a ${typeof v}`;
}

/** A bounded string field; `undefined` when absent and not required. */
export function stringField(o: Record<string, unknown>, key: string, opts: { required: true; max?: number }): string;
export function stringField(o: Record<string, unknown>, key: string, opts?: { required?: false; max?: number }): string | undefined;
export function stringField(
  o: Record<string, unknown>,
  key: string,
  opts: { required?: boolean; max?: number } = {},
): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (opts.required) throw new RecordError("missing field", `${key} is missing`);
    return undefined;
  }
  return boundedString(v, key, opts.max);
}

export function boundedString(v: unknown, what: string, max = MAX_FIELD_CHARS): string {
  if (typeof v !== "string") throw new RecordError("invalid field", `${what} is ${describe(v)}, not a string`);
  if (v.length > max) throw new RecordError("too large", `${what} has ${v.length} characters (limit ${max})`);
  return v;
}

export function arrayField(o: Record<string, unknown>, key: string): unknown[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new RecordError("invalid field", `${key} is ${describe(v)}, not an array`);
  return v;
}

export const CVE_ID = /^CVE-\d{4}-\d{4,19}$/;

export function cveId(v: unknown, what: string): string {
  if (v === undefined || v === null || v === "") throw new RecordError("missing id", `${what} is missing`);
  if (typeof v !== "string" || v.length > 32 || !CVE_ID.test(v)) {
    throw new RecordError("invalid id", `${what} ${JSON.stringify(v).slice(0, 64)} is not a CVE id`);
  }
  return v;
}

const DATE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?)?$/;

/**
 * Milliseconds since the epoch of an RFC 3339 date or date-time (offset optional, read as UTC), or
 * NaN. Stricter than Date.parse, which takes "2021-02-30" as 2 March.
 */
const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
function daysInMonth(year: number, month: number): number {
  if (month === 2 && (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0))) return 29;
  return DAYS[month - 1] ?? 0;
}

export function parseDate(s: string): number {
  const m = DATE.exec(s);
  if (m === null) return NaN;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const [hour, minute, second] = [Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)];
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return NaN;
  if (hour > 23 || minute > 59 || second > 60) return NaN;
  const ms = Number((m[7] ?? "0").padEnd(3, "0").slice(0, 3));
  let t = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  if (m[9] !== undefined) {
    const [oh, om] = [Number(m[10]), Number(m[11])];
    if (oh > 23 || om > 59) return NaN;
    t -= (m[9] === "-" ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  return t;
}

/** A date field kept as given, checked to be a real date. */
export function dateField(o: Record<string, unknown>, key: string, opts: { required: true }): string;
export function dateField(o: Record<string, unknown>, key: string, opts?: { required?: false }): string | undefined;
export function dateField(o: Record<string, unknown>, key: string, opts: { required?: boolean } = {}): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (opts.required) throw new RecordError("missing field", `${key} is missing`);
    return undefined;
  }
  const s = boundedString(v, key, 64);
  if (Number.isNaN(parseDate(s))) throw new RecordError("invalid date", `${key} ${JSON.stringify(s)} is not a date`);
  return s;
}

/** A finite number in [min, max]. */
export function numberInRange(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new RecordError("not a number", `${what} is ${describe(v)}`);
  if (v < min || v > max) throw new RecordError("out of range", `${what} ${v} is outside [${min}, ${max}]`);
  return v;
}
