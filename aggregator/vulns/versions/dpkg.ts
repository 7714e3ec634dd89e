/**
 * Debian package version ordering (`[epoch:]upstream[-revision]`), as Debian policy §5.6.12 and
 * `dpkg --compare-versions` define it (lib/dpkg/version.c `verrevcmp`). Used for the Debian and
 * Ubuntu ecosystems.
 */
import type { VersionScheme } from "./version-scheme.js";

export interface DpkgVersion {
  readonly epoch: number;
  readonly upstream: string;
  /** "" when absent: compares equal to "0", as in dpkg. */
  readonly revision: string;
}

const MAX_EPOCH = 2147483647; // dpkg rejects epochs above INT_MAX

const ZERO = 48;
const NINE = 57;
const TILDE = 126;
const PLUS = 43;
const MINUS = 45;

function isDigit(c: number): boolean {
  return c >= ZERO && c <= NINE;
}

function isAlpha(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

/** dpkg trims and splits on blanks only (space, tab). */
function isBlank(c: number): boolean {
  return c === 32 || c === 9;
}

/** C's isspace, which strtol skips before the epoch's digits. */
function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/**
 * The epoch in s[from, to) read as dpkg reads it (strtol, base 10: spaces, a sign, then digits
 * that must reach the colon), or undefined for dpkg's errors: empty, not a number, negative, too big.
 */
function epochOf(s: string, from: number, to: number): number | undefined {
  let i = from;
  while (i < to && isSpace(s.charCodeAt(i))) i++;
  const negative = s.charCodeAt(i) === MINUS;
  if (negative || s.charCodeAt(i) === PLUS) i++;
  if (i === to) return undefined;
  for (let k = i; k < to; k++) if (!isDigit(s.charCodeAt(k))) return undefined;
  while (i < to - 1 && s.charCodeAt(i) === ZERO) i++;
  if (to - i > 10) return undefined;
  const epoch = Number(s.slice(i, to));
  if (epoch > MAX_EPOCH || (negative && epoch !== 0)) return undefined;
  return epoch;
}

/**
 * Parses a version as dpkg's `parseversion` (lib/dpkg/parsehelp.c) does, and accepts what it
 * accepts: its errors are refusals (empty, embedded blanks, a bad epoch, nothing after the
 * colon, an empty revision or upstream part), its warnings are not (an upstream part not starting
 * with a digit, characters outside policy's alphabet): `dpkg --compare-versions` and the status
 * database take such versions with a warning and order them all the same. The epoch ends at the
 * first colon, so the upstream part may hold more ("1:2:3" is epoch 1, upstream "2:3").
 * dpkg works on bytes: a version with non-ASCII characters is kept as its UTF-8 bytes.
 */
export function parseDpkg(input: string): DpkgVersion | undefined {
  const s = /[^\x00-\x7f]/.test(input) ? Buffer.from(input, "utf8").toString("latin1") : input;
  if (s.includes("\0")) return undefined; // no C string holds one
  let from = 0;
  while (from < s.length && isBlank(s.charCodeAt(from))) from++;
  let end = from;
  while (end < s.length && !isBlank(s.charCodeAt(end))) end++;
  if (end === from) return undefined; // empty
  for (let i = end; i < s.length; i++) if (!isBlank(s.charCodeAt(i))) return undefined; // embedded blanks
  let start = from;
  let epoch = 0;
  const colon = s.indexOf(":", from);
  if (colon >= 0 && colon < end) {
    const e = epochOf(s, from, colon);
    if (e === undefined) return undefined;
    epoch = e;
    start = colon + 1;
    if (start === end) return undefined; // nothing after the colon
  }
  const hyphen = s.lastIndexOf("-", end - 1);
  let upstreamEnd = end;
  let revision = "";
  if (hyphen >= start) {
    if (hyphen === end - 1) return undefined; // empty revision
    revision = s.slice(hyphen + 1, end);
    upstreamEnd = hyphen;
  }
  if (upstreamEnd === start) return undefined; // empty upstream
  return { epoch, upstream: start === 0 && upstreamEnd === s.length ? s : s.slice(start, upstreamEnd), revision };
}

/**
 * dpkg's `order()` of a non-digit byte: `~` below everything (even the end), then letters, then
 * every other byte. dpkg passes a `char`: on amd64 (signed) a byte above 0x7f weighs its own
 * value, between the letters and the ASCII symbols (which weigh 256 more).
 */
function weight(c: number): number {
  if (c === TILDE) return -1;
  if (isAlpha(c) || c > 127) return c;
  return c + 256;
}

/**
 * Compares two upstream (or revision) strings: alternating runs of non-digits (compared
 * character by character with `weight`, the end of a string weighing 0) and digits (compared
 * as integers of any size: length without leading zeros first, then digit by digit).
 */
export function compareDpkgPart(a: string, b: string): number {
  const la = a.length;
  const lb = b.length;
  let i = 0;
  let j = 0;
  while (i < la || j < lb) {
    for (;;) {
      const ca = i < la ? a.charCodeAt(i) : -1;
      const cb = j < lb ? b.charCodeAt(j) : -1;
      const aText = ca >= 0 && !isDigit(ca);
      const bText = cb >= 0 && !isDigit(cb);
      if (!aText && !bText) break;
      // A digit or the end weighs 0, which no non-digit does: equal weights mean both are text.
      const wa = aText ? weight(ca) : 0;
      const wb = bText ? weight(cb) : 0;
      if (wa !== wb) return wa - wb;
      i++;
      j++;
    }
    while (i < la && a.charCodeAt(i) === ZERO) i++;
    while (j < lb && b.charCodeAt(j) === ZERO) j++;
    const si = i;
    const sj = j;
    while (i < la && isDigit(a.charCodeAt(i))) i++;
    while (j < lb && isDigit(b.charCodeAt(j))) j++;
    const na = i - si;
    const nb = j - sj;
    if (na !== nb) return na - nb;
    for (let k = 0; k < na; k++) {
      const d = a.charCodeAt(si + k) - b.charCodeAt(sj + k);
      if (d !== 0) return d;
    }
  }
  return 0;
}

/** Epoch, then upstream, then revision. */
export function compareDpkg(a: DpkgVersion, b: DpkgVersion): number {
  if (a.epoch !== b.epoch) return a.epoch - b.epoch;
  return compareDpkgPart(a.upstream, b.upstream) || compareDpkgPart(a.revision, b.revision);
}

/** Debian and Ubuntu. */
export const dpkgScheme: VersionScheme<DpkgVersion> = {
  name: "dpkg",
  parse: parseDpkg,
  compare: compareDpkg,
};
