/**
 * PEP 440 version ordering (PyPI). Accepts the spellings PEP 440 says to normalise: any case,
 * a leading "v", `-`/`_`/`.` separators (or none) around pre/post/dev signifiers, alpha/beta/
 * c/pre/preview/rev/r, implicit numbers ("1.0a" = "1.0a0") and implicit post releases ("1.0-1").
 */
import type { VersionScheme } from "./version-scheme.js";

/** Numbers beyond 2^53 stay exact as bigints; `<` and `>` compare the two kinds correctly. */
type Num = number | bigint;

// `pre` ranks: a bare dev release sorts before every pre-release of its release; no pre after all.
const PRE_DEV_ONLY = -1;
const PRE_NONE = 3;

export interface Pep440Version {
  readonly epoch: Num;
  /** Trailing zeros removed: "1.0.0" and "1" are the same release. */
  readonly release: readonly Num[];
  /** PRE_DEV_ONLY, 0 (a), 1 (b), 2 (rc) or PRE_NONE. */
  readonly pre: number;
  readonly preN: Num;
  /** -1 when there is no post release. */
  readonly post: Num;
  /** Infinity when there is no dev release. */
  readonly dev: Num;
  /** Lower-cased segments, numbers for all-digit ones; undefined without a local version. */
  readonly local: ReadonlyArray<Num | string> | undefined;
}

const PEP440 =
  /^\s*v?(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(alpha|a|beta|b|preview|pre|c|rc)[-_.]?(\d+)?)?(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d+)?)?(?:[-_.]?(dev)[-_.]?(\d+)?)?(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$/i;
const DIGITS = /^\d+$/;

function toNum(d: string): Num {
  return d.length <= 15 ? Number(d) : BigInt(d);
}

function preRank(label: string): number {
  switch (label.toLowerCase()) {
    case "a":
    case "alpha":
      return 0;
    case "b":
    case "beta":
      return 1;
    default:
      return 2; // c, rc, pre, preview
  }
}

/** Any PEP 440 spelling, normalised into the comparable form. */
export function parsePep440(v: string): Pep440Version | undefined {
  const m = PEP440.exec(v);
  if (m === null) return undefined;
  const parts = (m[2] as string).split(".");
  let len = parts.length;
  while (len > 0 && Number(parts[len - 1]) === 0) len--;
  const release: Num[] = new Array<Num>(len);
  for (let i = 0; i < len; i++) release[i] = toNum(parts[i] as string);
  const preLabel = m[3];
  const postN = m[5] ?? (m[6] !== undefined ? (m[7] ?? "0") : undefined);
  const hasDev = m[8] !== undefined;
  let pre = PRE_NONE;
  if (preLabel !== undefined) pre = preRank(preLabel);
  else if (postN === undefined && hasDev) pre = PRE_DEV_ONLY;
  let local: Array<Num | string> | undefined;
  if (m[10] !== undefined) {
    local = m[10].toLowerCase().split(/[-_.]/);
    for (let i = 0; i < local.length; i++) {
      const s = local[i] as string;
      if (DIGITS.test(s)) local[i] = toNum(s);
    }
  }
  return {
    epoch: m[1] === undefined ? 0 : toNum(m[1]),
    release,
    pre,
    preN: m[4] === undefined ? 0 : toNum(m[4]),
    post: postN === undefined ? -1 : toNum(postN),
    dev: hasDev ? toNum(m[9] ?? "0") : Infinity,
    local,
  };
}

function cmpNum(a: Num, b: Num): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** PEP 440: numeric segments above alphanumeric ones; a prefix below what extends it. */
function compareLocal(a: ReadonlyArray<Num | string> | undefined, b: ReadonlyArray<Num | string> | undefined): number {
  if (a === undefined) return b === undefined ? 0 : -1;
  if (b === undefined) return 1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i] as Num | string;
    const y = b[i] as Num | string;
    const xs = typeof x === "string";
    const ys = typeof y === "string";
    if (xs !== ys) return xs ? -1 : 1;
    const c = xs ? (x < y ? -1 : x > y ? 1 : 0) : cmpNum(x as Num, y as Num);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

/** Epoch, release (zero-padded), pre (a dev-only release first), post, dev, local. */
export function comparePep440(a: Pep440Version, b: Pep440Version): number {
  let r = cmpNum(a.epoch, b.epoch);
  if (r !== 0) return r;
  const ra = a.release;
  const rb = b.release;
  const n = Math.max(ra.length, rb.length);
  for (let i = 0; i < n; i++) {
    r = cmpNum(i < ra.length ? (ra[i] as Num) : 0, i < rb.length ? (rb[i] as Num) : 0);
    if (r !== 0) return r;
  }
  return (
    a.pre - b.pre ||
    cmpNum(a.preN, b.preN) ||
    cmpNum(a.post, b.post) ||
    cmpNum(a.dev, b.dev) ||
    compareLocal(a.local, b.local)
  );
}

/** PyPI. */
export const pep440Scheme: VersionScheme<Pep440Version> = {
  name: "pep440",
  parse: parsePep440,
  compare: comparePep440,
};
