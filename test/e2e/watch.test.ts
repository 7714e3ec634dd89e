/**
 * Agent and aggregator together over mTLS against the real engine: a container started after the
 * agent is up shows in WatchGraphs within 1 s, and disappears when removed.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { GraphEvent_Type, QueryService, type GraphEvent } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { callServerStream, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { cleanupContainers, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

describe("agent → aggregator → WatchGraphs", () => {
  let dir: string;
  let eng: TestEngine;
  let agg: RunningAggregator;
  let agent: RunningAgent;
  let client: grpc.Client;
  const events: Array<{ at: number; ev: GraphEvent }> = [];
  let stream: grpc.ClientReadableStream<GraphEvent>;

  before(async () => {
    eng = await testEngine();
    dir = await mkdtemp(join(tmpdir(), "sl-e2e-"));
    const tls = join(dir, "tls");
    await initCerts(tls, { nodes: ["e2e-node"] });
    agg = await startAggregator({ dataDir: dir, listen: "127.0.0.1:0", tls: await loadTls(tls, { role: "aggregator" }), log: silentLogger() });
    agent = await startAgent({
      node: "e2e-node",
      aggregator: `127.0.0.1:${agg.port}`,
      tls: await loadTls(tls, { role: "agent", node: "e2e-node" }),
      refreshMs: 2000,
      http: "127.0.0.1:0",
      log: silentLogger(),
    });
    await agent.link?.waitSynced();
    client = makeClient(QueryService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(tls, { role: "reader" })));
    stream = callServerStream(client, QueryService.method.watchGraphs, {});
    stream.on("data", (ev: GraphEvent) => events.push({ at: Date.now(), ev }));
    stream.on("error", () => undefined);
    await waitFor("snapshot", () => events.some((e) => e.ev.type === GraphEvent_Type.SNAPSHOT_DONE));
  });

  after(async () => {
    stream.cancel();
    client.close();
    await agent.stop();
    await agg.stop();
    await cleanupContainers(eng.docker);
    await rm(dir, { recursive: true, force: true });
  });

  it("shows a new container within 1 s and drops a removed one within 1 s", async () => {
    const c = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"]);
    // Measured from the moment the engine has started it (start() returned).
    const t0 = Date.now();
    const seen = await waitFor("upsert", () => events.find((e) => e.ev.type === GraphEvent_Type.UPSERT && e.ev.containerId === c.id && e.ev.graph?.state === "running"), 5000, 10);
    assert.ok(seen.at - t0 <= 1000, `running container appeared ${seen.at - t0} ms after start`);
    assert.equal(seen.ev.graph?.node, "e2e-node");
    assert.ok((seen.ev.graph?.layers.length ?? 0) >= 5);

    const t1 = Date.now();
    await c.remove({ force: true });
    const gone = await waitFor("delete", () => events.find((e) => e.ev.type === GraphEvent_Type.DELETE && e.ev.containerId === c.id), 5000, 10);
    assert.ok(gone.at - t1 <= 1000, `disappeared after ${gone.at - t1} ms`);
  });

  it("exposes Prometheus metrics and readiness on the agent's HTTP port", async () => {
    const res = await fetch(`http://127.0.0.1:${agent.httpPort}/metrics`);
    const text = await res.text();
    assert.match(text, /shadowlayer_agent_graph_builds_total \d+/);
    assert.match(text, /shadowlayer_agent_link_connected 1/);
    const ready = await fetch(`http://127.0.0.1:${agent.httpPort}/readyz`);
    assert.equal(ready.status, 200);
  });
});
