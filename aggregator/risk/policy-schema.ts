/**
 * The one schema for a policy, whichever way it arrives: the `--policies` file, `policyFromInit`
 * (the CLI's `policy set`), and AdminService.SetPolicy. Keys are the README's (snake_case, as in
 * the proto), so a message names the key the writer typed.
 */
import { z } from "zod";
import { create } from "@bufbuild/protobuf";
import { PolicySchema, type Policy } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { expected, parseWithSchema } from "../../common/parse-with-schema.js";

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const NAME_RULE = "a name of lowercase letters, digits, . _ - (at most 63, starting with a letter or digit)";
const PERCENT = "a number from 0 to 100";
const ORDER = "a whole number (lower is tried first)";
/** A policy's order when it does not say (the built-in default policy comes after every other). */
const DEFAULT_ORDER = 100;
const KEYS = ["name", "labels", "namespace", "rebuild_threshold", "switch_threshold", "order", "switch_on_drift"] as const;

const threshold = z
  .number({ error: expected(PERCENT) })
  .gte(0, { error: expected(PERCENT) })
  .lte(100, { error: expected(PERCENT) });

const inRange = (x: unknown) => typeof x === "number" && x >= 0 && x <= 100;

const policyInitSchema = z
  .strictObject(
    {
      name: z.string({ error: expected(NAME_RULE) }).regex(NAME, { error: expected(NAME_RULE) }),
      labels: z.record(z.string(), z.string({ error: expected("a label value (a string)") }), { error: expected("an object of label keys to values") }).optional(),
      namespace: z.string({ error: expected("a Kubernetes namespace (a string)") }).optional(),
      rebuild_threshold: threshold,
      switch_threshold: threshold,
      // int32 in the proto.
      order: z
        .number({ error: expected(ORDER) })
        .int({ error: expected(ORDER) })
        .gte(-(2 ** 31), { error: expected(ORDER) })
        .lte(2 ** 31 - 1, { error: expected(ORDER) })
        .optional(),
      switch_on_drift: z.boolean({ error: expected("true or false") }).optional(),
    },
    { error: (i) => (i.code === "unrecognized_keys" ? `unknown key (the keys are ${KEYS.join(", ")})` : expected("a policy object")(i)) },
  )
  .superRefine((p, ctx) => {
    if (!inRange(p.rebuild_threshold) || !inRange(p.switch_threshold)) return; // already reported
    if (p.switch_threshold < p.rebuild_threshold) {
      ctx.addIssue({
        code: "custom",
        path: ["switch_threshold"],
        input: p.switch_threshold,
        message: `${p.switch_threshold} is below rebuild_threshold (${p.rebuild_threshold}): it would switch to a shadow that was never built`,
      });
    }
  });

/** A policy as a person writes it (the `--policies` file's entries, `policy set`). */
export type PolicyInit = z.input<typeof policyInitSchema>;

const policiesSchema = z.array(policyInitSchema, { error: expected("a JSON array of policies") }).superRefine((list, ctx) => {
  const seen = new Map<string, number>();
  list.forEach((p, i) => {
    const first = seen.get(p.name);
    if (first === undefined) seen.set(p.name, i);
    else ctx.addIssue({ code: "custom", path: [i, "name"], input: p.name, message: `${JSON.stringify(p.name)} is already the name of policies[${first}]` });
  });
});

function toPolicy(p: z.output<typeof policyInitSchema>): Policy {
  return create(PolicySchema, {
    name: p.name,
    labels: p.labels ?? {},
    namespace: p.namespace ?? "",
    rebuildThreshold: p.rebuild_threshold,
    switchThreshold: p.switch_threshold,
    order: p.order ?? DEFAULT_ORDER,
    switchOnDrift: p.switch_on_drift ?? false,
  });
}

/** A checked Policy from its written form; throws InvalidArgument naming the key (`at.key`). */
export function policyFromInit(i: PolicyInit, at = "policy"): Policy {
  return toPolicy(parseWithSchema(policyInitSchema, i, at));
}

/** A Policy message (AdminService.SetPolicy, a configured seed) checked by the same schema. */
export function validatePolicy(p: Policy, at = "policy"): Policy {
  return policyFromInit(
    { name: p.name, labels: p.labels, namespace: p.namespace, rebuild_threshold: p.rebuildThreshold, switch_threshold: p.switchThreshold, order: p.order, switch_on_drift: p.switchOnDrift },
    at,
  );
}

/**
 * The `--policies` file's content (already JSON-parsed): an array of policies with distinct names.
 * `source` names the file in messages.
 */
export function parsePolicies(raw: unknown, source: string): Policy[] {
  return parseWithSchema(policiesSchema, raw, "policies", source).map(toPolicy);
}
