/**
 * Per-node caps over real mTLS: a node past its container cap or its graph-bytes cap has its new
 * writes refused with a reason, counted in metrics and in ListAgents, while its stream goes on
 * (updates that fit, deletes) and another node keeps writing. The caps come from flags or the
 * environment through the aggregator's configuration.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { resolveAggregatorConfig, startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

describe("per-node caps (two agents over mTLS)", () => {
  const dir = tempDir("sl-caps-");
  let agg: RunningAggregator;
  const clients: grpc.Client[] = [];
  const publishers: AgentStream[] = [];

  const agent = async (node: string) => {
    const c = makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(join(dir.path, "tls"), { role: "agent", node })));
    clients.push(c);
    const p = await connectAgent(c, node);
    publishers.push(p);
    return p;
  };
  const capped = async (cap: string) => {
    const m = agg.metrics.registry.getSingleMetric("shadowlayer_aggregator_capped_writes_total");
    return (await m?.get())?.values.find((v) => v.labels.cap === cap)?.value ?? 0;
  };
  const agents = async () => {
    const c = makeClient(QueryService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(join(dir.path, "tls"), { role: "reader" })));
    clients.push(c);
    return (await callUnary(c, QueryService.method.listAgents, {})).agents;
  };
  const stored = (node: string) => agg.store.all().filter((g) => g.node === node).length;

  before(async () => {
    await initCerts(join(dir.path, "tls"), { nodes: ["node-a", "node-b"] });
    agg = await startAggregator({
      dataDir: join(dir.path, "agg"),
      listen: "127.0.0.1:0",
      tls: await loadTls(join(dir.path, "tls"), { role: "aggregator" }),
      log: silentLogger(),
      caps: { maxContainers: 5, maxGraphBytes: 64 * 1024 },
    });
  });
  after(async () => {
    for (const p of publishers) p.close();
    for (const c of clients) c.close();
    await agg.stop();
  });

  it("refuses a node's containers past its cap, with a reason, and counts them; the other node keeps writing", async () => {
    const a = await agent("node-a");
    const b = await agent("node-b");
    await publish(a, Array.from({ length: 8 }, (_, i) => upsertOf(testGraph(containerIdOf(i, 0xa), "node-a"))));
    assert.equal(stored("node-a"), 5, "node-a keeps its first 5 containers and no more");
    assert.equal(await capped("containers"), 3);

    // Its stream goes on: an update of a container it has, and a delete, still land.
    await publish(a, [upsertOf(testGraph(containerIdOf(0, 0xa), "node-a", { state: "exited" }))]);
    assert.equal(agg.store.get(containerIdOf(0, 0xa))?.state, "exited");
    await publish(a, [{ case: "graphDelete", value: { containerId: containerIdOf(1, 0xa) } }]);
    assert.equal(stored("node-a"), 4);
    // The room the delete made is usable again.
    await publish(a, [upsertOf(testGraph(containerIdOf(9, 0xa), "node-a"))]);
    assert.equal(stored("node-a"), 5);

    await publish(b, Array.from({ length: 3 }, (_, i) => upsertOf(testGraph(containerIdOf(i, 0xb), "node-b"))));
    assert.equal(stored("node-b"), 3, "another node's writes are not refused for node-a's count");

    const list = await agents();
    const na = list.find((x) => x.node === "node-a");
    assert.equal(na?.cappedWrites, 3n);
    assert.match(na?.cappedReason ?? "", /node-a has 5 containers stored, its cap \(--max-containers-per-node 5\)/);
    assert.equal(list.find((x) => x.node === "node-b")?.cappedWrites, 0n);
  });

  it("refuses a graph that takes its node past the graph-bytes cap, also as an update", async () => {
    const b = await agent("node-b");
    const big = (n: number, bytes: number) => testGraph(containerIdOf(n, 0xb), "node-b", { layers: [{ layerId: `rw:${containerIdOf(n, 0xb)}`, name: "rw", createdBy: "x".repeat(bytes) }] });
    const before = await capped("graph_bytes");
    await publish(b, [upsertOf(big(10, 40 * 1024))]);
    assert.ok(agg.store.get(containerIdOf(10, 0xb)) !== undefined, "40 KiB fit under 64 KiB");
    await publish(b, [upsertOf(big(11, 40 * 1024))]);
    assert.equal(agg.store.get(containerIdOf(11, 0xb)), undefined, "another 40 KiB does not");
    // Growing the stored one past the cap is refused too, and the stored version stays.
    await publish(b, [upsertOf(big(10, 70 * 1024))]);
    assert.equal(agg.store.get(containerIdOf(10, 0xb))?.layers[0]?.createdBy.length, 40 * 1024);
    assert.equal((await capped("graph_bytes")) - before, 2);
    const nb = (await agents()).find((x) => x.node === "node-b");
    assert.equal(nb?.cappedWrites, 2n);
    assert.match(nb?.cappedReason ?? "", /node-b's graphs would take \d+ KiB with this one \(\d+ KiB\), over its cap of 64 KiB \(--max-graph-mb-per-node\)/);
  });

  it("takes the caps from flags, else the environment, and refuses nonsense", () => {
    const caps = (flags: Record<string, string>, env: Record<string, string> = {}) => resolveAggregatorConfig(flags, env).aggregator.caps;
    assert.deepEqual(caps({}), { maxContainers: 5000, maxGraphBytes: 64 * 1024 * 1024 });
    assert.deepEqual(caps({ maxContainersPerNode: "200", maxGraphMbPerNode: "8" }), { maxContainers: 200, maxGraphBytes: 8 * 1024 * 1024 });
    assert.deepEqual(caps({}, { SHADOWLAYER_MAX_CONTAINERS_PER_NODE: "300", SHADOWLAYER_MAX_GRAPH_MB_PER_NODE: "2" }), { maxContainers: 300, maxGraphBytes: 2 * 1024 * 1024 });
    assert.deepEqual(caps({ maxContainersPerNode: "7" }, { SHADOWLAYER_MAX_CONTAINERS_PER_NODE: "300" })?.maxContainers, 7, "the flag wins");
    assert.throws(() => caps({ maxContainersPerNode: "0" }), /--max-containers-per-node: expected a whole number of at least 1/);
    assert.throws(() => caps({}, { SHADOWLAYER_MAX_GRAPH_MB_PER_NODE: "lots" }), /SHADOWLAYER_MAX_GRAPH_MB_PER_NODE: expected a whole number/);
  });
});
