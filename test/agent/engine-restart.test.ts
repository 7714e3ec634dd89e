/**
 * The engine going away and coming back, as an agent sees it: the agent talks to the real engine
 * through a unix-socket relay that the test cuts and restores. While cut, the agent keeps its
 * state; once back, it resyncs and shows what changed meanwhile.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { silentLogger } from "../../common/log.js";
import { cleanupContainers, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";
import { SocketRelay } from "../harness/socket-relay.js";

describe("engine restart", () => {
  let eng: TestEngine;
  let dir: string;
  let relay: SocketRelay;
  let agent: RunningAgent;

  before(async () => {
    eng = await testEngine();
    dir = await mkdtemp(join(tmpdir(), "sl-relay-"));
    relay = new SocketRelay(join(dir, "docker.sock"), "/var/run/docker.sock");
    await relay.up();
    agent = await startAgent({ node: "relay-node", dockerSocket: relay.path, refreshMs: 500, log: silentLogger() });
  });
  after(async () => {
    await agent.stop();
    await relay.down();
    await cleanupContainers(eng.docker);
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps its graphs while the engine is gone and resyncs when it returns", async () => {
    const first = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"]);
    await waitFor("first container seen", () => agent.collector.get(first.id));
    await relay.down();
    // Changes the agent cannot see while cut off.
    const second = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"]);
    await first.remove({ force: true });
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(agent.collector.get(first.id), "state kept while the engine is unreachable");
    assert.equal(agent.collector.get(second.id), undefined);
    await relay.up();
    await waitFor("resync after the engine returns", () => (agent.collector.get(second.id) !== undefined && agent.collector.get(first.id) === undefined ? true : undefined), 15_000, 100);
    // A whole graph of the container started meanwhile, not a placeholder: its process and its writable layer.
    const g = agent.collector.get(second.id);
    assert.ok((g?.pid ?? 0) > 0, `pid ${g?.pid}`);
    assert.ok(g?.layers.some((l) => l.layerId === `rw:${second.id}`), "its writable layer");
  });
});
