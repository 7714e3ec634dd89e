/**
 * Debian package version ordering (`[epoch:]upstream[-revision]`), as Debian policy §5.6.12 and
 * `dpkg --compare-versions` define it. Used for the Debian and Ubuntu ecosystems.
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
const DOT = 46;
const HYPHEN = 45;

function isDigit(c: number): boolean {
  return c >= ZERO && c <= NINE;
}

function isAlpha(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

/** Policy: alphanumerics and `.+~`, plus `-` in the upstream part (it only occurs when a revision follows). */
function validChars(s: string, from: number, to: number, allowHyphen: boolean): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (isDigit(c) || isAlpha(c) || c === DOT || c === PLUS || c === TILDE) continue;
    if (allowHyphen && c === HYPHEN) continue;
    return false;
  }
  return true;
}

/**
 * Parses a version the way dpkg does, but turns dpkg's "invalid character" warnings into
 * rejections. An upstream part that does not start with a digit is accepted: dpkg only warns
 * about it and orders it consistently (a leading letter sorts after any digit: "1" < "a1").
 */
export function parseDpkg(input: string): DpkgVersion | undefined {
  const v = input.trim();
  if (v.length === 0) return undefined;
  let start = 0;
  let epoch = 0;
  const colon = v.indexOf(":");
  if (colon >= 0) {
    if (colon === 0 || colon > 10) return undefined;
    for (let i = 0; i < colon; i++) if (!isDigit(v.charCodeAt(i))) return undefined;
    epoch = Number(v.slice(0, colon));
    if (epoch > MAX_EPOCH) return undefined;
    start = colon + 1;
  }
  const hyphen = v.lastIndexOf("-");
  let end = v.length;
  let revision = "";
  if (hyphen >= start) {
    if (hyphen === v.length - 1) return undefined; // empty revision
    if (!validChars(v, hyphen + 1, v.length, false)) return undefined;
    revision = v.slice(hyphen + 1);
    end = hyphen;
  }
  if (end <= start) return undefined; // empty upstream
  if (!validChars(v, start, end, true)) return undefined;
  return { epoch, upstream: start === 0 && end === v.length ? v : v.slice(start, end), revision };
}

/** dpkg's weight of a non-digit character: `~` below everything (even the end), letters below other symbols. */
function weight(c: number): number {
  if (c === TILDE) return -1;
  if (isAlpha(c)) return c;
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
