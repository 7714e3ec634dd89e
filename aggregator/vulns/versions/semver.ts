/**
 * Semantic Versioning 2.0.0 with the precedence of its §11. Used for npm and for OSV `SEMVER`
 * ranges. One leniency: a single leading "v" is accepted ("v1.2.3", as Go and many tags write
 * it); "=", spaces and other loose forms are not.
 */
import type { VersionScheme } from "./version-scheme.js";

/** Numbers beyond 2^53 stay exact as bigints; `<` and `>` compare the two kinds correctly. */
type Num = number | bigint;

export interface SemVer {
  readonly major: Num;
  readonly minor: Num;
  readonly patch: Num;
  /** undefined for a release; numeric identifiers as numbers, the rest as strings. */
  readonly pre: ReadonlyArray<Num | string> | undefined;
}

const SEMVER =
  /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$/;
const DIGITS = /^\d+$/;

function toNum(d: string): Num {
  return d.length <= 15 ? Number(d) : BigInt(d);
}

/** Strict SemVer 2.0.0 (plus the optional "v"); build metadata is dropped, it has no precedence. */
export function parseSemver(v: string): SemVer | undefined {
  const m = SEMVER.exec(v);
  if (m === null) return undefined;
  let pre: Array<Num | string> | undefined;
  const p = m[4];
  if (p !== undefined) {
    pre = p.split(".");
    for (let i = 0; i < pre.length; i++) {
      const id = pre[i] as string;
      if (DIGITS.test(id)) {
        if (id.length > 1 && id.charCodeAt(0) === 48) return undefined; // §9: no leading zeros
        pre[i] = toNum(id);
      }
    }
  }
  return { major: toNum(m[1] as string), minor: toNum(m[2] as string), patch: toNum(m[3] as string), pre };
}

function cmpNum(a: Num, b: Num): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** §11: core numbers, then a release above its pre-releases, then identifier by identifier. */
export function compareSemver(a: SemVer, b: SemVer): number {
  const r = cmpNum(a.major, b.major) || cmpNum(a.minor, b.minor) || cmpNum(a.patch, b.patch);
  if (r !== 0) return r;
  const pa = a.pre;
  const pb = b.pre;
  if (pa === undefined) return pb === undefined ? 0 : 1;
  if (pb === undefined) return -1;
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    const x = pa[i] as Num | string;
    const y = pb[i] as Num | string;
    const xs = typeof x === "string";
    const ys = typeof y === "string";
    if (xs !== ys) return xs ? 1 : -1; // numeric identifiers rank below alphanumeric ones
    const c = xs ? (x < y ? -1 : x > y ? 1 : 0) : cmpNum(x as Num, y as Num);
    if (c !== 0) return c;
  }
  return pa.length - pb.length;
}

/** npm, and every OSV SEMVER range. */
export const semverScheme: VersionScheme<SemVer> = {
  name: "semver",
  parse: parseSemver,
  compare: compareSemver,
};
