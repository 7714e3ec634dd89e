/**
 * The OSV schema's rule for "is this version affected by this `affected[]` entry" (the
 * `IsVulnerable` pseudo-code of the schema's Evaluation section), on a pre-parsed form so that
 * matching millions of (package, advisory) pairs parses each advisory version only once.
 */
import { semverScheme, type VersionScheme } from "./versions/index.js";

export interface OsvEvent {
  introduced?: string;
  fixed?: string;
  last_affected?: string;
  limit?: string;
}

export interface OsvRange {
  type: "ECOSYSTEM" | "SEMVER" | "GIT";
  events: OsvEvent[];
}

export interface OsvAffected {
  ranges: OsvRange[];
  versions: string[];
}

const INTRODUCED = 0;
const FIXED = 1;
const LAST_AFFECTED = 2;

/** Stands for "0" as an introduced version: before every version. */
const MINUS_INFINITY: unique symbol = Symbol("-infinity");

interface CompiledEvent {
  readonly kind: number;
  readonly raw: string;
  readonly at: unknown;
}

interface CompiledRange {
  /** The scheme the range's versions are ordered by (SEMVER ranges: always SemVer). */
  readonly scheme: VersionScheme;
  /** introduced / fixed / last_affected, sorted by version (stable for ties). */
  readonly events: readonly CompiledEvent[];
  /** Parsed `limit` versions; undefined when the range has no limit (or a "*" one). */
  readonly limits: readonly unknown[] | undefined;
}

/** Treat as opaque: built by `compileAffected`, read by `isAffected` and `explain`. */
export interface CompiledAffected {
  readonly scheme: VersionScheme;
  readonly versions: ReadonlySet<string>;
  readonly ranges: readonly CompiledRange[];
}

export interface Explanation {
  affected: boolean;
  /** The introduced event that opened the deciding interval ("0" for "since the beginning"). */
  introduced?: string;
  /** The fix closing that interval: above the version when affected, at or below it when not. */
  fixed?: string;
  lastAffected?: string;
  /** The version is listed in `versions[]`. */
  viaVersionsList?: boolean;
}

/**
 * Parses every event version once. Problems (a version the scheme cannot parse, an event with
 * no or several kinds, a range without `introduced`, an unknown range type) are returned, not
 * thrown; the event at fault is dropped. Dropping an unparseable `fixed` / `last_affected` /
 * `limit` leaves its range open (errs towards "affected"); dropping an unparseable
 * `introduced` can lose the interval it opened, so callers should surface these problems (the
 * OSV parser drops a range with any, see `rangeProblems`). `versions[]` never has problems: its
 * entries are compared as exact strings, whatever the scheme makes of them.
 * GIT ranges are skipped: matching them needs the repository's commit graph.
 */
export function compileAffected(a: OsvAffected, scheme: VersionScheme): { compiled: CompiledAffected; problems: string[] } {
  const problems: string[] = [];
  const ranges: CompiledRange[] = [];
  for (const [ri, r] of a.ranges.entries()) {
    const c = compileRange(r, ri, scheme, problems);
    if (c !== undefined) ranges.push(c);
  }
  return { compiled: { scheme, versions: new Set(a.versions), ranges }, problems };
}

/** What `compileAffected` would report for range number `index` alone; [] for a range that compiles cleanly (or a GIT one). */
export function rangeProblems(r: OsvRange, index: number, scheme: VersionScheme): string[] {
  const problems: string[] = [];
  compileRange(r, index, scheme, problems);
  return problems;
}

function compileRange(r: OsvRange, ri: number, scheme: VersionScheme, problems: string[]): CompiledRange | undefined {
  const type: string = r.type;
  if (type === "GIT") return undefined;
  if (type !== "ECOSYSTEM" && type !== "SEMVER") {
    problems.push(`range ${ri}: unknown type "${type}"`);
    return undefined;
  }
  const rs = type === "SEMVER" ? semverScheme : scheme;
  const events: CompiledEvent[] = [];
  let limits: unknown[] | undefined = [];
  let sawLimit = false;
  for (const [ei, e] of r.events.entries()) {
    const keys = (["introduced", "fixed", "last_affected", "limit"] as const).filter((k) => e[k] !== undefined);
    const key = keys[0];
    if (key === undefined || keys.length > 1) {
      problems.push(`range ${ri} event ${ei}: needs exactly one of introduced/fixed/last_affected/limit`);
      continue;
    }
    const raw = e[key] as string;
    if (key === "limit") {
      sawLimit = true;
      if (raw.includes("*")) {
        limits = undefined; // "*" is infinity: no limit at all
        continue;
      }
      const at = rs.parse(raw);
      if (at === undefined) problems.push(`range ${ri}: limit "${raw}" is not a valid ${rs.name} version`);
      else limits?.push(at);
      continue;
    }
    if (key === "introduced" && raw === "0") {
      events.push({ kind: INTRODUCED, raw, at: MINUS_INFINITY });
      continue;
    }
    const at = rs.parse(raw);
    if (at === undefined) {
      problems.push(`range ${ri}: ${key} "${raw}" is not a valid ${rs.name} version`);
      continue;
    }
    events.push({ kind: key === "introduced" ? INTRODUCED : key === "fixed" ? FIXED : LAST_AFFECTED, raw, at });
  }
  if (!events.some((e) => e.kind === INTRODUCED)) {
    problems.push(`range ${ri}: no usable introduced event`);
    return undefined;
  }
  events.sort((x, y) => {
    if (x.at === MINUS_INFINITY) return y.at === MINUS_INFINITY ? 0 : -1;
    if (y.at === MINUS_INFINITY) return 1;
    return rs.compare(x.at, y.at);
  });
  // No limit event (or only unparseable ones): the implicit "*" applies.
  if (!sawLimit || (limits !== undefined && limits.length === 0)) limits = undefined;
  return { scheme: rs, events, limits };
}

interface RangeVerdict {
  affected: boolean;
  /** Index of the last event at or below the version that changed the state; -1 for none. */
  decidedBy: number;
}

function evaluateRange(r: CompiledRange, v: unknown): RangeVerdict {
  const cmp = r.scheme.compare;
  if (r.limits !== undefined) {
    let below = false;
    for (const l of r.limits) {
      if (cmp(v, l) < 0) {
        below = true;
        break;
      }
    }
    if (!below) return { affected: false, decidedBy: -1 };
  }
  let affected = false;
  let decidedBy = -1;
  const ev = r.events;
  for (let k = 0; k < ev.length; k++) {
    const e = ev[k] as CompiledEvent;
    const c = e.at === MINUS_INFINITY ? 1 : cmp(v, e.at);
    // Events are sorted: once one lies above the version, none after it can apply.
    if (c < 0) break;
    if (e.kind === INTRODUCED) {
      affected = true;
      decidedBy = k;
    } else if (e.kind === FIXED) {
      affected = false;
      decidedBy = k;
    } else if (c > 0) {
      affected = false; // last_affected is inclusive: only versions above it are unaffected
      decidedBy = k;
    }
  }
  return { affected, decidedBy };
}

/**
 * Evaluates the ranges for one version; `parsed` is `raw` parsed with `c.scheme` (parsed here
 * when omitted). SEMVER ranges parse `raw` with SemVer themselves (once per call).
 */
function evaluate(c: CompiledAffected, raw: string, parsed: unknown, stopAtFirst: boolean): Explanation {
  const listed = c.versions.has(raw);
  const ecoVersion = parsed === undefined ? c.scheme.parse(raw) : parsed;
  let semver: unknown;
  let semverParsed = false;
  let closed: Explanation | undefined;
  for (const r of c.ranges) {
    let v = ecoVersion;
    if (r.scheme !== c.scheme) {
      if (!semverParsed) {
        semver = r.scheme.parse(raw);
        semverParsed = true;
      }
      v = semver;
    }
    if (v === undefined) continue;
    const verdict = evaluateRange(r, v);
    if (verdict.affected) {
      if (stopAtFirst) return { affected: true };
      const out: Explanation = { affected: true };
      const opener = r.events[verdict.decidedBy];
      if (opener !== undefined) out.introduced = opener.raw;
      for (let k = verdict.decidedBy + 1; k < r.events.length; k++) {
        const e = r.events[k] as CompiledEvent;
        if (e.kind === FIXED) {
          out.fixed = e.raw;
          break;
        }
        if (e.kind === LAST_AFFECTED) {
          out.lastAffected = e.raw;
          break;
        }
      }
      if (listed) out.viaVersionsList = true;
      return out;
    }
    if (closed === undefined && verdict.decidedBy >= 0) {
      const closer = r.events[verdict.decidedBy] as CompiledEvent;
      closed = { affected: false };
      for (let k = verdict.decidedBy - 1; k >= 0; k--) {
        const e = r.events[k] as CompiledEvent;
        if (e.kind === INTRODUCED) {
          closed.introduced = e.raw;
          break;
        }
      }
      if (closer.kind === FIXED) closed.fixed = closer.raw;
      else closed.lastAffected = closer.raw;
    }
  }
  if (listed) return { affected: true, viaVersionsList: true };
  return closed ?? { affected: false };
}

/** True when `raw` is listed in `versions[]` or lies in any range (the OSV rule). */
export function isAffected(c: CompiledAffected, raw: string, parsed?: unknown): boolean {
  if (c.versions.has(raw)) return true;
  return evaluate(c, raw, parsed, true).affected;
}

/**
 * Like `isAffected`, and says why: for an affected version the interval it lies in (e.g.
 * `{ affected: true, introduced: "0", fixed: "2.19-0ubuntu6" }`); for an unaffected one the
 * interval it has left, when there is one (its `fixed` is the fix the version already has).
 */
export function explain(c: CompiledAffected, raw: string, parsed?: unknown): Explanation {
  return evaluate(c, raw, parsed, false);
}
