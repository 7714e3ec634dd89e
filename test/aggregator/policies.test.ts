/**
 * Which policy decides for a container: labels and namespace must all match, lower order first
 * (then name), the default last whether or not an operator changed it.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { policyFromInit } from "../../aggregator/index.js";
import { DEFAULT_POLICY, NAMESPACE_LABEL, orderPolicies, selectPolicy } from "../../aggregator/risk/policies.js";

const p = (name: string, extra: { labels?: Record<string, string>; namespace?: string; order?: number } = {}) => policyFromInit({ name, rebuild_threshold: 10, switch_threshold: 20, ...extra });

describe("policy selection", () => {
  it("orders by order then name, the built-in default last", () => {
    const list = orderPolicies([p("zeta", { order: 5 }), p("beta"), p("alpha"), p("first", { order: 1 })]);
    assert.deepEqual(list.map((x) => x.name), ["first", "zeta", "alpha", "beta", "default"]);
    const d = list[list.length - 1];
    assert.equal(d?.rebuildThreshold, DEFAULT_POLICY.rebuildThreshold);
    assert.equal(d?.switchThreshold, DEFAULT_POLICY.switchThreshold);
  });

  it("keeps an operator's default last, with its thresholds", () => {
    const mine = policyFromInit({ name: "default", rebuild_threshold: 30, switch_threshold: 40, order: 0 });
    const list = orderPolicies([mine, p("prod")]);
    assert.deepEqual(list.map((x) => [x.name, x.rebuildThreshold]), [["prod", 10], ["default", 30]]);
  });

  it("picks the first policy whose labels and namespace all match", () => {
    const list = orderPolicies([
      p("prod-web", { labels: { env: "prod", tier: "web" }, order: 1 }),
      p("prod", { labels: { env: "prod" }, order: 2 }),
      p("payments", { namespace: "payments", order: 3 }),
    ]);
    assert.equal(selectPolicy(list, { env: "prod", tier: "web" }).name, "prod-web");
    assert.equal(selectPolicy(list, { env: "prod", tier: "db" }).name, "prod");
    assert.equal(selectPolicy(list, { [NAMESPACE_LABEL]: "payments" }).name, "payments");
    assert.equal(selectPolicy(list, { [NAMESPACE_LABEL]: "other", env: "dev" }).name, "default");
    assert.equal(selectPolicy(list, {}).name, "default");
    // A pod read through CRI: its namespace, not a label the container set on itself, decides.
    assert.equal(selectPolicy(list, {}, { namespace: "payments", labels: {} }).name, "payments");
    assert.equal(selectPolicy(list, { [NAMESPACE_LABEL]: "payments" }, { namespace: "other", labels: {} }).name, "default", "the pod's real namespace wins over a label");
    assert.equal(selectPolicy(list, {}, { namespace: "other", labels: { env: "prod", tier: "web" } }).name, "prod-web", "a policy's labels match the pod's labels too");
  });

  it("never picks the default before a matching policy, even when the default's order is lower", () => {
    const list = orderPolicies([policyFromInit({ name: "default", rebuild_threshold: 1, switch_threshold: 2, order: -5 }), p("any")]);
    assert.equal(selectPolicy(list, { env: "x" }).name, "any", "a policy with no labels matches every container");
  });
});
