/**
 * Alpine package version ordering, following apk-tools' version.c:
 * `digits{.digits}...{letter}{_suffix{digits}}...{~hash}{-r digits}`.
 */
import type { VersionScheme } from "./version-scheme.js";

// Token kinds, in the order apk-tools ranks them (the order matters for the tie-break rule).
const INITIAL_DIGIT = 0;
const DIGIT = 1;
const LETTER = 2;
const SUFFIX = 3;
const SUFFIX_NO = 4;
const COMMIT_HASH = 5;
const REVISION_NO = 6;
const END = 7;

// Suffix ranks: pre-release suffixes below NONE (the plain release), post-release ones above.
const SUFFIX_NONE = 5;

/**
 * The token stream of a version. Values: numbers for letters (char code), suffixes (rank) and
 * digit runs that fit in 15 digits and have no leading zero (purely numeric tokens have theirs
 * stripped); strings for the rest: `.digits` with a leading zero (apk compares those as strings),
 * longer digit runs, commit hashes.
 */
export interface ApkVersion {
  readonly kinds: readonly number[];
  readonly values: ReadonlyArray<string | number>;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

function isLower(c: number): boolean {
  return c >= 97 && c <= 122;
}

function isHex(c: number): boolean {
  return isDigit(c) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}

function suffixRank(s: string): number {
  switch (s) {
    case "alpha":
      return 1;
    case "beta":
      return 2;
    case "pre":
      return 3;
    case "rc":
      return 4;
    case "cvs":
      return 6;
    case "svn":
      return 7;
    case "git":
      return 8;
    case "hg":
      return 9;
    case "p":
      return 10;
    default:
      return -1;
  }
}

/** The value of the digit run v[from, to): a number when exact, else the digit string. */
function digits(v: string, from: number, to: number, keepLeadingZero: boolean): string | number {
  if (!keepLeadingZero) while (from < to - 1 && v.charCodeAt(from) === 48) from++;
  else if (v.charCodeAt(from) === 48 && to - from > 1) return v.slice(from, to);
  if (to - from > 15) return v.slice(from, to);
  let n = 0;
  for (let k = from; k < to; k++) n = n * 10 + (v.charCodeAt(k) - 48);
  return n;
}

// Scratch token buffers, copied out at exact size: versions are kept by the hundred thousand.
const kinds: number[] = [];
const values: Array<string | number> = [];

/** undefined for anything apk-tools would call an invalid version. */
export function parseApk(v: string): ApkVersion | undefined {
  const n = v.length;
  let i = 0;
  while (i < n && isDigit(v.charCodeAt(i))) i++;
  if (i === 0) return undefined;
  kinds.length = 0;
  values.length = 0;
  kinds.push(INITIAL_DIGIT);
  values.push(digits(v, 0, i, false));
  let prev = INITIAL_DIGIT;
  while (i < n) {
    const c = v.charCodeAt(i);
    if (isLower(c)) {
      if (prev > DIGIT) return undefined;
      prev = LETTER;
      kinds.push(LETTER);
      values.push(c);
      i++;
    } else if (c === 46 /* . */) {
      if (prev > DIGIT) return undefined;
      const s = ++i;
      while (i < n && isDigit(v.charCodeAt(i))) i++;
      if (i === s) return undefined;
      prev = DIGIT;
      kinds.push(DIGIT);
      values.push(digits(v, s, i, true));
    } else if (isDigit(c)) {
      if (prev !== SUFFIX) return undefined; // digits right after a letter, a hash, ...
      const s = i;
      while (i < n && isDigit(v.charCodeAt(i))) i++;
      prev = SUFFIX_NO;
      kinds.push(SUFFIX_NO);
      values.push(digits(v, s, i, false));
    } else if (c === 95 /* _ */) {
      if (prev > SUFFIX_NO) return undefined;
      const s = ++i;
      while (i < n && isLower(v.charCodeAt(i))) i++;
      const rank = suffixRank(v.slice(s, i));
      if (rank < 0) return undefined;
      prev = SUFFIX;
      kinds.push(SUFFIX);
      values.push(rank);
    } else if (c === 126 /* ~ */) {
      if (prev >= COMMIT_HASH) return undefined;
      const s = ++i;
      while (i < n && isHex(v.charCodeAt(i))) i++;
      if (i === s) return undefined;
      prev = COMMIT_HASH;
      kinds.push(COMMIT_HASH);
      values.push(v.slice(s, i));
    } else if (c === 45 /* - */) {
      if (prev >= REVISION_NO || v.charCodeAt(i + 1) !== 114 /* r */) return undefined;
      i += 2;
      const s = i;
      while (i < n && isDigit(v.charCodeAt(i))) i++;
      if (i === s) return undefined;
      prev = REVISION_NO;
      kinds.push(REVISION_NO);
      values.push(digits(v, s, i, false));
    } else {
      return undefined;
    }
  }
  return { kinds: kinds.slice(), values: values.slice() };
}

function lexical(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Two token values: numbers directly; otherwise as digit strings (or hashes) by the rules. */
function compareValues(kind: number, a: string | number, b: string | number): number {
  if (typeof a === "number" && typeof b === "number") return a < b ? -1 : a > b ? 1 : 0;
  const sa = typeof a === "number" ? String(a) : a;
  const sb = typeof b === "number" ? String(b) : b;
  if (kind === COMMIT_HASH) return lexical(sa, sb);
  // A `.digits` with a leading zero on either side: string order, as in Gentoo.
  if (kind === DIGIT && (sa.charCodeAt(0) === 48 || sb.charCodeAt(0) === 48)) return lexical(sa, sb);
  // Unbounded integers without leading zeros: the longer is larger.
  return sa.length !== sb.length ? (sa.length < sb.length ? -1 : 1) : lexical(sa, sb);
}

/**
 * Token by token; when one version runs out or the token kinds differ, the longer one is newer
 * unless it continues with a pre-release suffix ("1.0_rc1" < "1.0" < "1.0_p1", "1.0" < "1.0-r0").
 */
export function compareApk(a: ApkVersion, b: ApkVersion): number {
  const ka = a.kinds;
  const kb = b.kinds;
  const va = a.values;
  const vb = b.values;
  let t = 0;
  let ta: number;
  let tb: number;
  for (;;) {
    ta = t < ka.length ? (ka[t] as number) : END;
    tb = t < kb.length ? (kb[t] as number) : END;
    if (ta !== tb || ta === END) break;
    const x = va[t] as string | number;
    const y = vb[t] as string | number;
    if (x !== y) {
      if (typeof x === "number" && typeof y === "number") return x < y ? -1 : 1;
      const r = compareValues(ta, x, y);
      if (r !== 0) return r;
    }
    t++;
  }
  if (ta === tb) return 0;
  // Equal so far: the longer one is newer, unless what it continues with is a pre-release suffix.
  if (ta === SUFFIX && (va[t] as number) < SUFFIX_NONE) return -1;
  if (tb === SUFFIX && (vb[t] as number) < SUFFIX_NONE) return 1;
  return ta > tb ? -1 : 1;
}

/** Alpine. */
export const apkScheme: VersionScheme<ApkVersion> = {
  name: "apk",
  parse: parseApk,
  compare: compareApk,
};
