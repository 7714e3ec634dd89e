/**
 * What `shadowlayer agents` says while the aggregator refuses an agent's stream every time (here
 * over an invalid graph in the agent's full state): before, the node read as connected with 0
 * spooled while its telemetry piled up. Now it is not connected, its spool shows what waits, and
 * the last link error is there, as the agent saw it and as the aggregator did.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { HelloSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { AggregatorLink } from "../../agent/link/aggregator-link.js";
import { Spool } from "../../agent/link/spool.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { AgentState } from "../../agent/state/agent-state.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { agentJson, renderAgents } from "../../cli/agents-format.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { waitFor } from "../harness/engine.js";

const graph = (containerId: string, node: string): LayerGraph =>
  create(LayerGraphSchema, { containerId, node, state: "running", layers: [{ layerId: `sha256:${"a".repeat(64)}`, kind: LayerKind.IMAGE }] });

describe("agents while the aggregator refuses the agent", () => {
  let dir: string;
  let agg: RunningAggregator;
  let state: AgentState;
  let spool: Spool;
  const links: AggregatorLink[] = [];

  const link = async (node: string, graphs: LayerGraph[], spooled?: Spool) => {
    const l = new AggregatorLink({
      address: `127.0.0.1:${agg.port}`,
      tls: await loadTls(join(dir, "tls"), { role: "agent", node }),
      hello: () => create(HelloSchema, { node, agentVersion: "test" }),
      snapshot: () => graphs,
      ...(spooled !== undefined ? { spool: spooled } : {}),
      heartbeat: async () => ({ at: timestampNow(), telemetry: { execSource: "proc-poll" } }),
      log: silentLogger(),
      metrics: new AgentMetrics(),
    });
    links.push(l);
    l.start();
    return l;
  };

  const agents = async () => {
    const c = makeClient(QueryService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(join(dir, "tls"), { role: "reader" })));
    try {
      return (await callUnary(c, QueryService.method.listAgents, {})).agents;
    } finally {
      c.close();
    }
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-agents-link-"));
    await initCerts(join(dir, "tls"), { nodes: ["node-bad", "node-good"] });
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(join(dir, "tls"), { role: "aggregator" }), log: silentLogger() });
    state = new AgentState(join(dir, "agent"), silentLogger());
    await state.start();
    spool = await Spool.open(state.spool);
  });
  after(async () => {
    for (const l of links) l.stop();
    await spool.close();
    await state.stop();
    await agg.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("shows the node not connected, what its spool holds and the last link error", async () => {
    for (let i = 0; i < 3; i++) await spool.append({ case: "windows", value: { windows: [{ node: "node-bad", containerId: "d".repeat(64) }] } });
    // The aggregator ends every stream of this agent at the bad graph of its full state.
    const l = await link("node-bad", [graph("not-a-container-id", "node-bad")], spool);
    await waitFor("a reconnect that reported the refusal", () => (l.status().reconnects >= 1n ? true : undefined), 15_000);
    const a = await waitFor("the refusal reported", async () => (await agents()).find((x) => x.node === "node-bad" && x.link?.agent?.lastError !== "" && x.link?.agent?.lastError !== undefined), 15_000, 100);
    const json = agentJson(a) as { connected: boolean; spool_pending: number; link: { last_error: string; last_disconnect: string; synced: boolean } };
    assert.equal(json.connected, false);
    assert.equal(json.link.synced, false);
    assert.equal(json.spool_pending, 3, "what waits in the spool");
    assert.match(json.link.last_error, /not a 64-hex id/);
    assert.match(json.link.last_disconnect, /refused: .*not a 64-hex id/);
    const table = renderAgents([a]);
    assert.match(table, /^NODE\s+CONNECTED\s+.*SPOOLED.*LAST LINK ERROR/m);
    assert.match(table, /^node-bad\s+no\s+\S+\s+\S+\s+0\s+0\s+3\s+/m);
    assert.match(table, /not a 64-hex id/);
    assert.equal(l.connected, false);
    l.stop();
  });

  it("shows a synced node connected", async () => {
    const l = await link("node-good", [graph("e".repeat(64), "node-good")]);
    await l.waitSynced();
    const a = await waitFor("node-good listed", async () => (await agents()).find((x) => x.node === "node-good"));
    assert.equal(a.connected, true, JSON.stringify(agentJson(a)));
    assert.equal(a.link?.synced, true);
    assert.equal(a.link?.agent?.lastError, "");
    l.stop();
    const gone = await waitFor("node-good not connected", async () => (await agents()).find((x) => x.node === "node-good" && !x.connected));
    assert.match(gone.link?.lastDisconnect ?? "", /cancelled|ended/);
  });
});
