/**
 * A container whose three processes each carry 1.5 MB of argv: before the caps its graph was a
 * 4.5 MB message, over the aggregator's 4 MiB limit, and the link reconnected forever with the
 * node cut off. Now the graph arrives with each argv cut and flagged, and the link never drops.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { toBinary } from "@bufbuild/protobuf";
import { LayerGraphSchema } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { ARGV_BYTES, MESSAGE_LIMIT_BYTES } from "../../agent/link/message-caps.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { cleanupContainers, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

/**
 * Three processes with 1.5 MB of argv each: the container's shell execs `sh -c SCRIPT big` plus 15
 * arguments of 100,000 bytes (one argument may hold at most 128 KiB), whose three looping
 * subshells share that argv from birth. Made inside the container, since the engine's API refuses
 * requests that large.
 */
const SCRIPT = "for i in 1 2 3; do (while :; do sleep 600; done) & done; wait";
const CHILD = ["sh", "-c", SCRIPT, "big"];
const MAIN = `A=$(head -c 100000 /dev/zero | tr '\\0' a); sleep 1; exec sh -c '${SCRIPT}' big${" $A".repeat(15)}`;

describe("a container with megabytes of argv", () => {
  let dir: string;
  let eng: TestEngine;
  let agg: RunningAggregator;
  let agent: RunningAgent;
  let client: grpc.Client;

  before(async () => {
    eng = await testEngine();
    dir = await mkdtemp(join(tmpdir(), "sl-argv-"));
    const tls = join(dir, "tls");
    await initCerts(tls, { nodes: ["argv-node"] });
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(tls, { role: "aggregator" }), log: silentLogger() });
    agent = await startAgent({
      node: "argv-node",
      aggregator: `127.0.0.1:${agg.port}`,
      tls: await loadTls(tls, { role: "agent", node: "argv-node" }),
      refreshMs: 500,
      inventory: false,
      log: silentLogger(),
    });
    await agent.link?.waitSynced();
    client = makeClient(QueryService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(tls, { role: "reader" })));
  });

  after(async () => {
    client.close();
    await agent.stop();
    await agg.stop();
    await cleanupContainers(eng.docker);
    await rm(dir, { recursive: true, force: true });
  });

  it("reaches the aggregator with each argv cut and flagged, without a reconnect", async () => {
    const c = await runContainer(eng.docker, eng.base, ["sh", "-c", MAIN]);
    const longArgv = (g: { layers: Array<{ processes: Array<{ argv: string[]; truncated: boolean }> }> }) => g.layers.flatMap((l) => l.processes).filter((p) => p.argv[3] === "big");
    const collected = await waitFor("the agent's graph with the long-argv processes", () => {
      const got = agent.collector.current().find((x) => x.containerId === c.id);
      return got !== undefined && longArgv(got).length >= 3 ? got : undefined;
    });
    assert.ok(toBinary(LayerGraphSchema, collected).length > MESSAGE_LIMIT_BYTES, "as collected, the graph is over the message limit");
    const g = await waitFor(
      "the graph with the long-argv processes at the aggregator",
      async () => {
        const got = await callUnary(client, QueryService.method.getLayerGraph, { container: c.id }).catch(() => undefined);
        return got !== undefined && longArgv(got).length >= 3 ? got : undefined;
      },
      30_000,
      200,
    );
    assert.equal(g.truncated, true, "the graph says something in it was cut");
    for (const p of longArgv(g)) {
      assert.equal(p.truncated, true);
      const bytes = p.argv.reduce((n, a) => n + Buffer.byteLength(a) + 2, 0);
      assert.ok(bytes <= ARGV_BYTES, `argv of ${bytes} bytes is within the cap`);
      assert.deepEqual(p.argv.slice(0, 4), CHILD, "the command itself is kept");
    }
    const status = agent.link?.status();
    assert.equal(status?.reconnects, 0n, `the link never reconnected (last error: ${status?.lastError})`);
    assert.equal(status?.droppedOversize, 0n);
    assert.ok((status?.truncated ?? 0n) > 0n, "truncated messages are counted");

    // Gone again: the node is still connected, and its state current.
    await c.remove({ force: true });
    await waitFor("the container gone at the aggregator", async () =>
      (await callUnary(client, QueryService.method.listContainers, { node: "argv-node" })).containers.some((x) => x.containerId === c.id) ? undefined : true,
    );
    assert.equal(agent.link?.connected, true);
    assert.equal(agent.link?.status().reconnects, 0n);
  });
});
