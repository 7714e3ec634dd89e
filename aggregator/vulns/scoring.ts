/**
 * Threat and risk scores. The rules are written out in aggregator/vulns/SCORING.md; this file is
 * their only implementation. Everything here is pure: inputs in, numbers and reasons out.
 */

export interface VulnFacts {
  id: string;
  /** CVSS base score 0-10 (v3.x, else v4.0: SCORING.md), or undefined when no source gives one. */
  cvss: number | undefined;
  /** EPSS probability 0-1, or undefined when the CVE has no EPSS row. */
  epss: number | undefined;
  kev: boolean;
  kevRansomware: boolean;
  fixAvailable: boolean;
}

/** Severity used when no CVSS score is known: a middling 5.0, said so in the reason. */
export const UNKNOWN_CVSS = 5.0;

/** How likely exploitation is, 0-1: KEV (ransomware) 1.0, KEV 0.9, else 0.1 + 0.8 x EPSS. */
export function exploitFactor(v: Pick<VulnFacts, "epss" | "kev" | "kevRansomware">): number {
  if (v.kev) return v.kevRansomware ? 1.0 : 0.9;
  return 0.1 + 0.8 * Math.min(1, Math.max(0, v.epss ?? 0));
}

/** Fix availability: a public fix (and its diff) is a map for attackers, and a rebuild removes it. */
export function fixFactor(fixAvailable: boolean): number {
  return fixAvailable ? 1.0 : 0.85;
}

/** One vulnerability's threat in [0, 1]: severity x exploit likelihood x fix factor. */
export function vulnThreat(v: VulnFacts): number {
  const severity = Math.min(10, Math.max(0, v.cvss ?? UNKNOWN_CVSS)) / 10;
  return severity * exploitFactor(v) * fixFactor(v.fixAvailable);
}

/**
 * A layer's threat (0-100) from its vulnerabilities' threats: the worst one sets the floor, and
 * all the others together may add at most half of what is left above it (combined as independent
 * chances). So many mediums can never outrank one actively exploited critical.
 */
export function aggregateThreat(threats: readonly number[]): number {
  if (threats.length === 0) return 0;
  let top = 0;
  let topIdx = -1;
  threats.forEach((t, i) => {
    if (t > top) {
      top = t;
      topIdx = i;
    }
  });
  let none = 1;
  threats.forEach((t, i) => {
    if (i !== topIdx) none *= 1 - Math.min(1, Math.max(0, t));
  });
  const rest = 1 - none;
  return round1(100 * (top + (1 - top) * 0.5 * rest));
}

/** Drift (0-100) from the time of the layer's latest drift detection. */
export function driftScore(latest: Date | undefined, now: Date): number {
  if (latest === undefined) return 0;
  const age = now.getTime() - latest.getTime();
  if (age <= 3_600_000) return 80;
  if (age <= 86_400_000) return 50;
  return 0;
}

/** An anomaly verdict as scoring reads it (telemetry.proto Anomaly). */
export interface AnomalyFacts {
  score: number;
  alerting: boolean;
  generic: boolean;
  modelVersion: string;
  reasons: ReadonlyArray<{ feature: string; sigma: number }>;
}

/** A layer's anomaly verdict counts for this many of its windows' lengths after its window ended. */
export const ANOMALY_FRESH_WINDOWS = 3;

/**
 * Until when a verdict counts: ANOMALY_FRESH_WINDOWS window lengths (each held to 1 s - 10 min)
 * after its window ended, by the aggregator's clock when the agent's runs ahead.
 */
export function anomalyFreshUntil(windowEnd: Date | undefined, windowSeconds: number, arrived: Date): Date {
  const len = Math.min(600, Math.max(1, Number.isFinite(windowSeconds) ? windowSeconds : 10));
  const from = windowEnd === undefined || windowEnd > arrived ? arrived : windowEnd;
  return new Date(from.getTime() + ANOMALY_FRESH_WINDOWS * len * 1000);
}

/**
 * The risk formula's anomaly term A (0-100): the model's score while the layer is in an anomaly
 * alert, else 0. Alert hygiene (warm-up, k of n windows, hysteresis, cooldown: models/ANOMALY.md)
 * decides what counts, so one high window moves no risk; the score itself is still shown.
 */
export function anomalyTerm(a: AnomalyFacts | undefined): number {
  if (a === undefined || !a.alerting || !Number.isFinite(a.score)) return 0;
  return Math.min(100, Math.max(0, a.score));
}

/** An anomaly as one line of a score's reasons: "cpu_seconds.rate 7.3σ above baseline (score 82, model v)". */
export function anomalyDetail(a: AnomalyFacts): string {
  const top = a.reasons[0];
  const model = `${a.generic ? "generic model" : "model"} ${a.modelVersion || "?"}`;
  const score = `score ${Math.round(Number.isFinite(a.score) ? a.score : 0)}, ${model}`;
  if (top === undefined) return `anomalous behaviour (${score})`;
  const sigma = Number.isFinite(top.sigma) ? top.sigma : 0;
  return `${top.feature} ${Math.abs(sigma).toFixed(1)}σ ${sigma >= 0 ? "above" : "below"} baseline (${score})`;
}

/**
 * Risk (0-100): threat, anomaly and drift combined as independent chances of the layer being
 * (about to be) compromised: 100 x (1 - (1 - T)(1 - A)(1 - D)), each as a fraction.
 */
export function riskScore(threat: number, anomaly: number | undefined, drift: number): number {
  const f = (x: number) => 1 - Math.min(100, Math.max(0, x)) / 100;
  return round1(100 * (1 - f(threat) * f(anomaly ?? 0) * f(drift)));
}

export function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
