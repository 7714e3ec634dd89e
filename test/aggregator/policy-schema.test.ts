/**
 * The one policy schema: what the README's policy file accepts stays accepted, and every refusal
 * names the key it is about, whether it came from the `--policies` file, `policyFromInit` or a
 * SetPolicy message.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PolicySchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { ShadowError, Code } from "../../common/errors.js";
import { parsePolicies, policyFromInit } from "../../aggregator/index.js";
import { validatePolicy } from "../../aggregator/risk/policy-schema.js";

/** Asserts that `fn` throws InvalidArgument with exactly `message`. */
function refuses(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ShadowError, String(err));
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.message, message);
    return true;
  });
}

describe("policy schema", () => {
  it("accepts the README's policy file, defaults included", () => {
    const got = parsePolicies(
      [
        { name: "prod", labels: { env: "prod" }, rebuild_threshold: 40, switch_threshold: 80, order: 10 },
        { name: "payments", namespace: "payments", rebuild_threshold: 0, switch_threshold: 100 },
      ],
      "p.json",
    );
    assert.deepEqual(
      got.map((p) => [p.name, p.labels, p.namespace, p.rebuildThreshold, p.switchThreshold, p.order]),
      [
        ["prod", { env: "prod" }, "", 40, 80, 10],
        ["payments", {}, "payments", 0, 100, 100],
      ],
    );
    assert.deepEqual(parsePolicies([], "p.json"), []);
  });

  it("names the file, the entry and the key of each problem", () => {
    const ok = { name: "a", rebuild_threshold: 10, switch_threshold: 20 };
    refuses(() => parsePolicies([ok, { ...ok, name: "b" }, { ...ok, name: "c", rebuild_threshold: 140 }], "--policies p.json"), "--policies p.json: policies[2].rebuild_threshold: expected a number from 0 to 100, got 140");
    refuses(() => parsePolicies({ policies: [] }, "p.json"), "p.json: policies: expected a JSON array of policies, got an object");
    refuses(() => parsePolicies([ok, 7], "p.json"), "p.json: policies[1]: expected a policy object, got 7");
    refuses(() => parsePolicies([{ name: "a", rebuild_threshold: 10 }], "p.json"), "p.json: policies[0].switch_threshold: missing (expected a number from 0 to 100)");
    refuses(() => parsePolicies([{ ...ok, rebuild_threshold: "10" }], "p.json"), 'p.json: policies[0].rebuild_threshold: expected a number from 0 to 100, got "10"');
    refuses(() => parsePolicies([{ ...ok, labels: { "app.kubernetes.io/name": 3 } }], "p.json"), 'p.json: policies[0].labels["app.kubernetes.io/name"]: expected a label value (a string), got 3');
    refuses(() => parsePolicies([{ ...ok, order: 1.5 }], "p.json"), "p.json: policies[0].order: expected a whole number (lower is tried first), got 1.5");
    refuses(() => parsePolicies([{ ...ok, name: "Prod" }], "p.json"), 'p.json: policies[0].name: expected a name of lowercase letters, digits, . _ - (at most 63, starting with a letter or digit), got "Prod"');
  });

  it("refuses a misspelt key instead of ignoring it (a policy without its namespace would match everything)", () => {
    refuses(
      () => parsePolicies([{ name: "a", namespce: "prod", rebuild_threshold: 10, switch_threshold: 20 }], "p.json"),
      "p.json: policies[0].namespce: unknown key (the keys are name, labels, namespace, rebuild_threshold, switch_threshold, order, switch_on_drift)",
    );
  });

  it("refuses a switch threshold below the rebuild threshold, and two policies of one name", () => {
    refuses(
      () => parsePolicies([{ name: "a", rebuild_threshold: 90, switch_threshold: 10 }], "p.json"),
      "p.json: policies[0].switch_threshold: 10 is below rebuild_threshold (90): it would switch to a shadow that was never built",
    );
    const p = { name: "a", rebuild_threshold: 10, switch_threshold: 20 };
    refuses(() => parsePolicies([p, { ...p, name: "b" }, p], "p.json"), 'p.json: policies[2].name: "a" is already the name of policies[0]');
  });

  it("lists several problems at once, the first five and a count", () => {
    const bad = (name: string) => ({ name, rebuild_threshold: -1, switch_threshold: 101 });
    assert.throws(() => parsePolicies([bad("a"), bad("b"), bad("c"), bad("d")], "p.json"), /: p\.json: policies\[0\]\.rebuild_threshold: .*; policies\[2\]\.rebuild_threshold: [^;]*; and 3 more$/);
  });

  it("checks policyFromInit and a SetPolicy message by the same rules", () => {
    refuses(() => policyFromInit({ name: "prod", rebuild_threshold: Number("x"), switch_threshold: 90 }), "policy.rebuild_threshold: expected a number from 0 to 100, got NaN");
    refuses(() => validatePolicy(create(PolicySchema, { name: "prod", rebuildThreshold: 50, switchThreshold: 140 })), "policy.switch_threshold: expected a number from 0 to 100, got 140");
    refuses(() => validatePolicy(create(PolicySchema, { name: "", rebuildThreshold: 50, switchThreshold: 60 })), 'policy.name: expected a name of lowercase letters, digits, . _ - (at most 63, starting with a letter or digit), got ""');
    const msg = create(PolicySchema, { name: "prod", labels: { env: "prod" }, namespace: "ns", rebuildThreshold: 50, switchThreshold: 60, order: 0 });
    assert.deepEqual(validatePolicy(msg), msg, "a valid message comes back as it was (order 0 stays 0)");
    assert.equal(policyFromInit({ name: "x", rebuild_threshold: 1, switch_threshold: 1 }).order, 100);
  });

  it("takes switch_on_drift from a file and from a message (default false), and refuses a non-boolean", () => {
    const [on, off] = parsePolicies(
      [
        { name: "prod", rebuild_threshold: 40, switch_threshold: 80, switch_on_drift: true },
        { name: "dev", rebuild_threshold: 40, switch_threshold: 80 },
      ],
      "p.json",
    );
    assert.equal(on?.switchOnDrift, true);
    assert.equal(off?.switchOnDrift, false);
    assert.equal(validatePolicy(create(PolicySchema, { name: "prod", rebuildThreshold: 50, switchThreshold: 60, switchOnDrift: true })).switchOnDrift, true, "SetPolicy keeps it");
    refuses(() => parsePolicies([{ name: "a", rebuild_threshold: 10, switch_threshold: 20, switch_on_drift: "yes" }], "p.json"), 'p.json: policies[0].switch_on_drift: expected true or false, got "yes"');
  });
});
