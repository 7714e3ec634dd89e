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
 * score, severity and the base vector in canonical metric order. undefined when the vector is
 * malformed: a missing base metric, an unknown metric or value, a repeated metric.
 * Temporal and environmental metrics are validated and then ignored.
 */
export function cvss31BaseScore(vector: string): { score: number; severity: string; vector: string } | undefined {
  const v = vector.trim();
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

/** The v4.0 base metrics, in the specification's order. */
const V4_BASE = ["AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA"] as const;

// Scoring a v4.0 vector costs about 0.3 ms and feeds repeat a few thousand distinct vectors many
// times over: remembered, up to a bound.
const V4_CACHE_MAX = 20_000;
const v4Cache = new Map<string, { score: number; severity: string; vector: string } | undefined>();

/**
 * Parses "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N" (threat, environmental
 * and supplemental metrics may follow, as NVD writes them: "/E:X/CR:X/.../U:X") and returns its
 * CVSS-B score: base metrics only, since exploitation is what EPSS and KEV measure here. The
 * vector returned is the base vector in canonical order. undefined when the vector is malformed:
 * a missing base metric, an unknown metric or value, a repeated metric.
 */
export function cvss40BaseScore(vector: string): { score: number; severity: string; vector: string } | undefined {
  const v = vector.trim();
  if (v4Cache.has(v)) return v4Cache.get(v);
  const r = scoreV4(v);
  if (v4Cache.size >= V4_CACHE_MAX) v4Cache.clear();
  v4Cache.set(v, r);
  return r;
}

function scoreV4(v: string): { score: number; severity: string; vector: string } | undefined {
  if (!v.startsWith("CVSS:4.0/")) return undefined;
  const m = new Map<string, string>();
  for (const part of v.slice("CVSS:4.0/".length).split("/")) {
    const colon = part.indexOf(":");
    if (colon <= 0 || colon === part.length - 1) return undefined;
    const key = part.slice(0, colon);
    // The calculator keeps the last of a repeated metric; a vector that says two things is wrong.
    if (m.has(key)) return undefined;
    m.set(key, part.slice(colon + 1));
  }
  for (const k of V4_BASE) if (m.get(k) === undefined || m.get(k) === "X") return undefined;
  const base = `CVSS:4.0/${V4_BASE.map((k) => `${k}:${m.get(k) as string}`).join("/")}`;
  let score: number;
  try {
    // The whole vector, so that a bad threat or environmental value is refused too.
    const { Cvss4P0 } = calculator();
    new Cvss4P0(v);
    score = new Cvss4P0(base).calculateScores().overall;
  } catch {
    return undefined;
  }
  if (!Number.isFinite(score) || score < 0 || score > 10) return undefined;
  return { score, severity: severityOf(score), vector: base };
}
