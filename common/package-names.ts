/**
 * Package-name rules both sides need: the agent normalises what a layer installs, the aggregator
 * what an advisory names, and a match needs both in the same form.
 */

/** PEP 503: lower case, runs of "-", "_" and "." become one "-". */
export function normalizePypiName(name: string): string {
  return name.trim().replace(/[-_.]+/g, "-").toLowerCase();
}
