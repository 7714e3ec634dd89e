/** The agent's switchover flags: durations in ms or with a unit become the machine's default bounds; a bad one stops the agent with its name. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveAgentConfig } from "../../agent/config.js";

test("--switch-observe/--switch-health-timeout/--switch-drain-timeout take ms or a unit; a bad duration is refused", () => {
  const c = resolveAgentConfig({ insecure: true, switchObserve: "2m", switchHealthTimeout: "1500", switchDrainTimeout: "2.5s" }, {});
  assert.deepEqual(c.agent.switchBounds, { observeMs: 120_000, healthTimeoutMs: 1500, drainTimeoutMs: 2500 });
  assert.equal(resolveAgentConfig({ insecure: true }, {}).agent.switchBounds, undefined, "the machine's own defaults apply");
  assert.throws(() => resolveAgentConfig({ insecure: true, switchObserve: "soon" }, {}), /switch.?observe.*expected a duration/i);
  assert.throws(() => resolveAgentConfig({ insecure: true, switchDrainTimeout: "0s" }, {}), /expected a duration/);
});
