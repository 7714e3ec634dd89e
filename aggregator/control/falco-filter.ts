/**
 * Which Falco alerts may switch a container: a minimum priority (Falco's order) and, when any
 * are given, a list of rules, each a rule's exact name or a `/regex/flags`. Falco fires on far
 * more than a compromise (a shell in a container is a Notice in its default rules), so an
 * operator chooses what is worth replacing a running service for.
 */
import { Code, ShadowError } from "../../common/errors.js";
import { atLeast, FALCO_PRIORITIES, type FalcoAlert, type FalcoPriority } from "./falco-alert.js";

export const DEFAULT_MIN_PRIORITY: FalcoPriority = "warning";

/** A rule entry: `/…/` (flags i, u, s allowed) is a regular expression, anything else an exact name. */
const REGEX_ENTRY = /^\/(.+)\/([isu]*)$/s;

/** One entry as a matcher; a regular expression that does not compile is refused with the entry named. */
export function ruleMatcher(entry: string): (rule: string) => boolean {
  const m = REGEX_ENTRY.exec(entry);
  if (m === null) return (rule) => rule === entry;
  let re: RegExp;
  try {
    re = new RegExp(m[1] ?? "", m[2]);
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `rule pattern ${JSON.stringify(entry)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return (rule) => re.test(rule);
}

export type FilterVerdict = { pass: true } | { pass: false; reason: "filtered_priority" | "filtered_rule"; why: string };

/** The filter an intake applies; `rules` empty lets every rule through. */
export function falcoFilter(rules: readonly string[], minPriority: FalcoPriority = DEFAULT_MIN_PRIORITY): (a: FalcoAlert) => FilterVerdict {
  const matchers = rules.map(ruleMatcher);
  const listed = `${rules.length} rule pattern${rules.length === 1 ? "" : "s"}`;
  return (a) => {
    if (!atLeast(a.priority, minPriority)) {
      const below = FALCO_PRIORITIES.slice(0, FALCO_PRIORITIES.indexOf(minPriority) + 1).join(", ");
      return { pass: false, reason: "filtered_priority", why: `priority ${a.priority} is below the minimum ${minPriority} (switching on: ${below})` };
    }
    if (matchers.length > 0 && !matchers.some((m) => m(a.rule))) return { pass: false, reason: "filtered_rule", why: `the rule matches none of the ${listed} the intake switches on` };
    return { pass: true };
  };
}
