/**
 * CVSS base scores from vector strings. v3.1 by its specification's formulas (§7.1, Appendix A
 * Roundup); v3.0 vectors are scored with the same formulas and the v3.1 Roundup: the two versions
 * differ only in Roundup's floating-point corner cases, which v3.1 fixed. v4.0 has no formula (its
 * score interpolates between macro-vector lookup tables) and is scored by a maintained calculator
 * checked against FIRST's reference scores in the tests.
 */
import { createRequire } from "node:module";

// Loaded on the first v4.0 vector: most processes (the CLI, an aggregator without NVD) never score one.
const require = createRequire(import.meta.url);
let calculatorModule: typeof import("ae-cvss-calculator") | undefined;
const calculator = (): typeof import("ae-cvss-calculator") => (calculatorModule ??= require("ae-cvss-calculator") as typeof import("ae-cvss-calculator"));

type Values = Readonly<Record<string, number>>;

// Base metric weights (§7.4). PR depends on scope: [unchanged, changed].
const AV: Values = { N: 0.85, A: 0.62, L: 0.55, P: 0.2 };
const AC: Values = { L: 0.77, H: 0.44 };
const PR_U: Values = { N: 0.85, L: 0.62, H: 0.27 };
const PR_C: Values = { N: 0.85, L: 0.68, H: 0.5 };
const UI: Values = { N: 0.85, R: 0.62 };
const CIA: Values = { H: 0.56, L: 0.22, N: 0 };

const BASE = ["AV", "AC", "PR", "UI", "S", "C", "I", "A"] as const;

/** Every metric a v3.x vector may carry, with its allowed values. */
const ALLOWED: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  Object.entries({
    AV: "NALP",
    AC: "LH",
    PR: "NLH",
    UI: "NR",
    S: "UC",
    C: "HLN",
    I: "HLN",
    A: "HLN",
    E: "XUPFH",
    RL: "XOTWU",
    RC: "XURC",
    CR: "XLMH",
    IR: "XLMH",
    AR: "XLMH",
    MAV: "XNALP",
    MAC: "XLH",
    MPR: "XNLH",
    MUI: "XNR",
    MS: "XUC",
    MC: "XNLH",
    MI: "XNLH",
    MA: "XNLH",
  }).map(([k, v]) => [k, new Set(v)]),
);

/** Appendix A: the smallest one-decimal number >= x, computed on integers to dodge float error. */
export function roundup(x: number): number {
  const i = Math.round(x * 100000);
  if (i % 10000 === 0) return i / 100000;
  return (Math.floor(i / 10000) + 1) / 10;
}

/** Qualitative severity rating scale (§5). */
export function severityOf(score: number): string {
  if (!(score > 0)) return "NONE"; // also NaN
  if (score < 4) return "LOW";
  if (score < 7) return "MEDIUM";
  if (score < 9) return "HIGH";
  return "CRITICAL";
}

/**
 * Parses "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" (or "CVSS:3.0/...") and returns its base
 * score, severity and the base vector in canonical metric order. undefined when the vector breaks
 * the grammar of the specification's §6: a wrong prefix, surrounding or inner space, a missing
 * base metric, an unknown metric or value (names and values are case-sensitive), a repeated metric.
 * Metrics may come in any order: "Programs reading CVSS v3.1 vector strings must accept metrics in
 * any order" (v3.1 §6; v3.0 §6 reads the same). Temporal and environmental metrics are validated
 * and then ignored.
 */
export function cvss31BaseScore(v: string): { score: number; severity: string; vector: string } | undefined {
  const prefix = v.startsWith("CVSS:3.1/") ? "CVSS:3.1" : v.startsWith("CVSS:3.0/") ? "CVSS:3.0" : undefined;
  if (prefix === undefined) return undefined;
  const m = new Map<string, string>();
  for (const part of v.slice(prefix.length + 1).split("/")) {
    const colon = part.indexOf(":");
    if (colon <= 0) return undefined;
    const key = part.slice(0, colon);
    const value = part.slice(colon + 1);
    if (!ALLOWED.get(key)?.has(value) || m.has(key)) return undefined;
    m.set(key, value);
  }
  for (const k of BASE) if (!m.has(k)) return undefined;
  const get = (table: Values, k: string): number => table[m.get(k) as string] as number;

  const changed = m.get("S") === "C";
  const iss = 1 - (1 - get(CIA, "C")) * (1 - get(CIA, "I")) * (1 - get(CIA, "A"));
  const impact = changed ? 7.52 * (iss - 0.029) - 3.25 * Math.pow(iss - 0.02, 15) : 6.42 * iss;
  const exploitability = 8.22 * get(AV, "AV") * get(AC, "AC") * get(changed ? PR_C : PR_U, "PR") * get(UI, "UI");
  let score = 0;
  if (impact > 0) {
    score = changed ? roundup(Math.min(1.08 * (impact + exploitability), 10)) : roundup(Math.min(impact + exploitability, 10));
  }
  const base = BASE.map((k) => `${k}:${m.get(k) as string}`).join("/");
  return { score, severity: severityOf(score), vector: `${prefix}/${base}` };
}

const HLN = ["H", "L", "N"];
const XHLN = ["X", "H", "L", "N"];
const XHML = ["X", "H", "M", "L"];
const XSHLN = ["X", "S", "H", "L", "N"];

/**
 * Every v4.0 metric with its allowed values, in the order of the specification's Table 23: base
 * (the first 11, mandatory, with no "Not Defined" X), threat, environmental, supplemental.
 */
const V4_METRICS: ReadonlyArray<readonly [string, ReadonlySet<string>]> = (
  [
    ["AV", ["N", "A", "L", "P"]],
    ["AC", ["L", "H"]],
    ["AT", ["N", "P"]],
    ["PR", ["N", "L", "H"]],
    ["UI", ["N", "P", "A"]],
    ["VC", HLN],
    ["VI", HLN],
    ["VA", HLN],
    ["SC", HLN],
    ["SI", HLN],
    ["SA", HLN],
    ["E", ["X", "A", "P", "U"]],
    ["CR", XHML],
    ["IR", XHML],
    ["AR", XHML],
    ["MAV", ["X", "N", "A", "L", "P"]],
    ["MAC", ["X", "L", "H"]],
    ["MAT", ["X", "N", "P"]],
    ["MPR", ["X", "N", "L", "H"]],
    ["MUI", ["X", "N", "P", "A"]],
    ["MVC", XHLN],
    ["MVI", XHLN],
    ["MVA", XHLN],
    ["MSC", XHLN],
    ["MSI", XSHLN],
    ["MSA", XSHLN],
    ["S", ["X", "N", "P"]],
    ["AU", ["X", "N", "Y"]],
    ["R", ["X", "A", "U", "I"]],
    ["V", ["X", "D", "C"]],
    ["RE", ["X", "L", "M", "H"]],
    ["U", ["X", "Clear", "Green", "Amber", "Red"]],
  ] as const
).map(([k, v]) => [k, new Set<string>(v)] as const);
const V4_BASE_COUNT = 11;
const V4_POSITION: ReadonlyMap<string, number> = new Map(V4_METRICS.map(([k], i) => [k, i]));

/**
 * The base part of a v4.0 vector ("CVSS:4.0/AV:…/SA:…"), or undefined when the vector breaks the
 * grammar of the specification's §7: a wrong prefix, an unknown metric or value (case-sensitive),
 * a missing base metric, a repeated metric, or metrics out of order. Unlike v3.x, order is part
 * of the grammar: "A vector string must contain metrics in the order shown in Table 23, every
 * other ordering is invalid" (v4.0 §7).
 */
export function cvss40BaseVector(vector: string): string | undefined {
  if (!vector.startsWith("CVSS:4.0/")) return undefined;
  const parts = vector.slice("CVSS:4.0/".length).split("/");
  let last = -1;
  let base = 0;
  for (const part of parts) {
    const colon = part.indexOf(":");
    if (colon <= 0) return undefined;
    const at = V4_POSITION.get(part.slice(0, colon));
    // Strictly increasing positions: in Table 23's order, and no metric twice.
    if (at === undefined || at <= last) return undefined;
    if (!(V4_METRICS[at] as readonly [string, ReadonlySet<string>])[1].has(part.slice(colon + 1))) return undefined;
    if (at < V4_BASE_COUNT) base++;
    last = at;
  }
  // In order and without repeats: all base metrics present means they are the first 11 parts.
  if (base !== V4_BASE_COUNT) return undefined;
  return `CVSS:4.0/${parts.slice(0, V4_BASE_COUNT).join("/")}`;
}

// Scoring a v4.0 vector costs about 0.3 ms and feeds repeat a few thousand distinct vectors many
// times over: remembered, up to a bound.
const V4_CACHE_MAX = 20_000;
const v4Cache = new Map<string, { score: number; severity: string; vector: string } | undefined>();

/**
 * Scores a v4.0 vector (grammar as `cvss40BaseVector`; NVD writes every metric, the undefined
 * ones as X) and returns its CVSS-B score: base metrics only, since exploitation is what EPSS and
 * KEV measure here. The vector returned is the base vector. undefined when the vector is invalid.
 */
export function cvss40BaseScore(vector: string): { score: number; severity: string; vector: string } | undefined {
  if (v4Cache.has(vector)) return v4Cache.get(vector);
  const r = scoreV4(vector);
  if (v4Cache.size >= V4_CACHE_MAX) v4Cache.clear();
  v4Cache.set(vector, r);
  return r;
}

function scoreV4(v: string): { score: number; severity: string; vector: string } | undefined {
  const base = cvss40BaseVector(v);
  if (base === undefined) return undefined;
  let score: number;
  try {
    const { Cvss4P0 } = calculator();
    score = new Cvss4P0(base).calculateScores().overall;
  } catch {
    return undefined;
  }
  if (!Number.isFinite(score) || score < 0 || score > 10) return undefined;
  return { score, severity: severityOf(score), vector: base };
}

/**
 * The score of the whole v4.0 vector (CVSS-B, -BT, -BE or -BTE, as its metrics say): the number a
 * feed publishes beside it, to be checked against. undefined when the vector is invalid.
 */
export function cvss40VectorScore(vector: string): number | undefined {
  const b = cvss40BaseScore(vector);
  if (b === undefined) return undefined;
  // Threat and environmental metrics left at X (as NVD writes them) change nothing.
  if (vector.split("/").slice(1 + V4_BASE_COUNT).every((p) => p.endsWith(":X"))) return b.score;
  try {
    const score = new (calculator().Cvss4P0)(vector).calculateScores().overall;
    return Number.isFinite(score) ? score : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a score a feed states beside a vector agrees with the score computed from it: equal up
 * to one step of the one-decimal rounding (v3.0 scorers rounded up in floating point, which can
 * land 0.1 higher than the v3.1 Roundup of Appendix A).
 */
export function statedScoreAgrees(stated: number, computed: number): boolean {
  return Math.abs(stated - computed) <= 0.1 + 1e-9;
}
