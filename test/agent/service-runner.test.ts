/**
 * The agent's service runner: start in order, stop in reverse, and on a failed start stop what
 * already started and rethrow.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { partService, service, startServices } from "../../agent/service-runner.js";
import { silentLogger } from "../../common/log.js";

function recorder() {
  const log: string[] = [];
  const make = (name: string, failStart = false, failStop = false) =>
    service(
      name,
      () => {
        if (failStart) throw new Error(`${name} cannot start`);
        log.push(`start ${name}`);
      },
      () => {
        log.push(`stop ${name}`);
        if (failStop) throw new Error(`${name} cannot stop`);
      },
    );
  return { log, make };
}

describe("service runner", () => {
  it("starts in order and stops in reverse", async () => {
    const { log, make } = recorder();
    const running = await startServices([make("state"), make("spool"), make("link")], silentLogger());
    assert.deepEqual(log, ["start state", "start spool", "start link"]);
    await running.stop();
    assert.deepEqual(log.slice(3), ["stop link", "stop spool", "stop state"]);
    await running.stop();
    assert.equal(log.length, 6, "a second stop stops nothing again");
  });

  it("on a failed start stops what already started, in reverse, and rethrows", async () => {
    const { log, make } = recorder();
    await assert.rejects(startServices([make("state"), make("spool"), make("telemetry", true), make("link")], silentLogger()), /telemetry cannot start/);
    assert.deepEqual(log, ["start state", "start spool", "stop spool", "stop state"], "neither the failed service nor later ones are stopped or started");
  });

  it("stops the rest when one stop fails", async () => {
    const { log, make } = recorder();
    const running = await startServices([make("state"), make("spool", false, true), make("link")], silentLogger());
    await running.stop();
    assert.deepEqual(log.slice(3), ["stop link", "stop spool", "stop state"]);
  });

  it("stops a part whose own start failed half-way", async () => {
    const log: string[] = [];
    const part = {
      start: () => (log.push("start"), Promise.reject(new Error("no eBPF"))),
      stop: () => void log.push("stop"),
    };
    await assert.rejects(startServices([partService("telemetry", part)], silentLogger()), /no eBPF/);
    assert.deepEqual(log, ["start", "stop"]);
  });
});
