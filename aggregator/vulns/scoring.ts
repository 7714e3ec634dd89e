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
