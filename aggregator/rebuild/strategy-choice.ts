/**
 * Which strategy rebuilds an image, from the job's reasons and the image's metadata: drift and
 * anomaly reasons mean the image's own content is suspect on the node, so `restore` re-makes it;
 * vulnerabilities are fixed by the cheapest strategy that applies: `rebase` (new base, app layers
 * reused byte for byte), then `patch` (one added layer of fixed packages), then `recipe` (a full
 * rebuild from the declared build context). Every strategy's answer is kept, so a job that no
 * strategy can serve says why each one could not.
 */
import { Code, ShadowError } from "../../common/errors.js";
import type { ImageFacts, Strategy, StrategyName } from "./types.js";

/** Reasons that are not advisories. */
export const BEHAVIOUR_REASONS = new Set(["drift", "performance-anomaly"]);

const VULN_ORDER: readonly StrategyName[] = ["rebase", "patch", "recipe", "restore"];
const BEHAVIOUR_ORDER: readonly StrategyName[] = ["restore", "recipe"];

export interface StrategyChoice {
  strategy: Strategy;
  reason: string;
}

export function chooseStrategy(
  strategies: readonly Strategy[],
  facts: ImageFacts,
  reasons: readonly string[],
  ctx: { baseMap: Record<string, string>; packageMirror?: string },
  forced?: string,
): StrategyChoice {
  const byName = new Map(strategies.map((s) => [s.name, s]));
  if (forced !== undefined && forced !== "") {
    const s = byName.get(forced as StrategyName);
    if (s === undefined) throw new ShadowError(Code.InvalidArgument, `unknown strategy ${JSON.stringify(forced)} (known: ${[...byName.keys()].join(", ")})`);
    const why = s.applies(facts, reasons, ctx);
    if (why === undefined) {
      const no = s.refusal?.(facts, reasons, ctx);
      throw new ShadowError(Code.FailedPrecondition, `strategy ${forced} does not apply to ${facts.name}${no !== undefined ? `: ${no}` : ""}`);
    }
    return { strategy: s, reason: `forced: ${why}` };
  }
  const behaviour = reasons.some((r) => BEHAVIOUR_REASONS.has(r));
  const vulns = reasons.some((r) => !BEHAVIOUR_REASONS.has(r));
  // A job for both kinds of reason restores first: a tampered layer makes any other result suspect.
  const order = behaviour ? (vulns ? [...BEHAVIOUR_ORDER, ...VULN_ORDER.filter((n) => !BEHAVIOUR_ORDER.includes(n))] : BEHAVIOUR_ORDER) : VULN_ORDER;
  const tried: string[] = [];
  for (const name of order) {
    const s = byName.get(name);
    if (s === undefined) continue;
    const why = s.applies(facts, reasons, ctx);
    if (why !== undefined) return { strategy: s, reason: why };
    const no = s.refusal?.(facts, reasons, ctx);
    tried.push(no !== undefined ? `${name} (${no})` : name);
  }
  throw new ShadowError(
    Code.FailedPrecondition,
    `no strategy can rebuild ${facts.name}: tried ${tried.join(", ") || "none"}. Give the image a base label (org.opencontainers.image.base.name) with a newer base, ` +
      "a recipe (shadowlayer.recipe.context under a --recipe-root), or configure --package-mirror for patch",
  );
}

