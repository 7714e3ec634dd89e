/**
 * Switchover records at the aggregator (real level, real gRPC, insecure loopback): what agents
 * report through AgentMessage.switchover is stored, served by ListSwitchovers and
 * WatchSwitchovers, cut to bounds, and refused (counted, not stored) when it names another node
 * or another node's container; the real agent link sends all records it keeps after each sync
 * and each change at once; and a switchover waiting for its shadow survives an aggregator restart
 * and goes on after it. Test peers play the agents (connectAgent) where a test needs to send
 * records by hand.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { AgentService, CommandStatus, HelloSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AdminService, QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { RebuildState, ShadowPreparationSchema } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { SwitchoverEvent_Type, SwitchoverKind, SwitchoverOutcome, SwitchoverRecordSchema, SwitchoverTrigger, type SwitchoverEvent, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { AggregatorLink } from "../../agent/link/aggregator-link.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { callServerStream, callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { policyFromInit, startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { TestBuilderPool, TestJobRunner } from "../harness/rebuild-test-doubles.js";
import { publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const NODE_A = "records-a";
const NODE_B = "records-b";
const cid = (n: number, node: string) => `${n.toString(16).padStart(4, "0")}${(node === NODE_A ? "a1" : "b2").repeat(30)}`;
const HOSTILE = "evil\x1b]0;pwned\x07\u202e";

function record(id: string, node: string, containerId: string, extra: Omit<MessageInitShape<typeof SwitchoverRecordSchema>, "$typeName"> = {}): SwitchoverRecord {
  return create(SwitchoverRecordSchema, { id, kind: SwitchoverKind.SWITCHOVER, node, containerId, trigger: SwitchoverTrigger.MANUAL, outcome: SwitchoverOutcome.SUCCEEDED, requestedAt: timestampNow(), updatedAt: timestampNow(), ...extra });
}

async function refused(agg: RunningAggregator): Promise<number> {
  const m = agg.metrics.registry.getSingleMetric("shadowlayer_aggregator_refused_writes_total");
  return (await m?.get())?.values.find((v) => v.labels.kind === "switchover")?.value ?? 0;
}

describe("switchover records from agents", () => {
  const dir = tempDir("sl-switch-records-");
  let agg: RunningAggregator;
  let query: grpc.Client;
  let a: AgentStream;
  let b: AgentStream;

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    const address = `127.0.0.1:${agg.port}`;
    query = makeClient(QueryService, address, channelCredentials("insecure"));
    a = await connectAgent(makeClient(AgentService, address, channelCredentials("insecure")), NODE_A);
    b = await connectAgent(makeClient(AgentService, address, channelCredentials("insecure")), NODE_B);
    await publish(a, [upsertOf(testGraph(cid(1, NODE_A), NODE_A, { containerName: "rec-a1" }))]);
    await publish(b, [upsertOf(testGraph(cid(1, NODE_B), NODE_B, { containerName: "rec-b1" }))]);
  });
  after(async () => {
    a.close();
    b.close();
    query.close();
    await agg.stop();
  });

  it("stores a node's records, cut to bounds, and serves them through List and Watch", async () => {
    const events: SwitchoverEvent[] = [];
    const stream = callServerStream(query, QueryService.method.watchSwitchovers, {});
    stream.on("data", (e: SwitchoverEvent) => events.push(e));
    stream.on("error", () => undefined);
    try {
      await waitFor("snapshot", () => (events.some((e) => e.type === SwitchoverEvent_Type.SNAPSHOT_DONE) ? true : undefined));
      const steps = Array.from({ length: 200 }, (_, i) => ({ name: `step-${i}`, state: "done", durationMs: i, message: "m".repeat(10_000) }));
      await a.send({ case: "switchover", value: record("agent-rec-1", NODE_A, cid(1, NODE_A), { reason: `${HOSTILE}${"r".repeat(100_000)}`, containerName: "rec-a1", steps, switchMs: 88 }) });
      const listed = await callUnary(query, QueryService.method.listSwitchovers, { container: "rec-a1" });
      const [r] = listed.records;
      assert.equal(r?.id, "agent-rec-1");
      assert.ok(r.reason.startsWith(HOSTILE) && r.reason.length <= 2048, "the reason is cut, its start kept");
      assert.equal(r.steps.length, 64);
      assert.equal(r.steps[63]?.name, "step-199", "the last step is kept");
      assert.ok(r.steps.every((s) => s.message.length <= 512));
      await waitFor("watch sees it", () => (events.some((e) => e.type === SwitchoverEvent_Type.UPSERT && e.record?.id === "agent-rec-1") ? true : undefined));
      // A later report of the same id replaces it.
      await a.send({ case: "switchover", value: record("agent-rec-1", NODE_A, cid(1, NODE_A), { outcome: SwitchoverOutcome.ROLLED_BACK }) });
      assert.equal(agg.switchovers.get("agent-rec-1")?.outcome, SwitchoverOutcome.ROLLED_BACK);
      assert.equal(agg.switchovers.get("agent-rec-1")?.containerName, "rec-a1", "what the report left empty stays");
    } finally {
      stream.cancel();
    }
  });

  it("refuses (acks, counts, does not store) a record for another node, about another node's container, or over another node's record", async () => {
    const before = await refused(agg);
    await a.send({ case: "switchover", value: record("wrong-node", NODE_B, cid(1, NODE_B)) });
    await a.send({ case: "switchover", value: record("their-container", NODE_A, cid(1, NODE_B)) });
    await a.send({ case: "switchover", value: record("their-shadow", NODE_A, cid(1, NODE_A), { shadowContainerId: cid(1, NODE_B) }) });
    await b.send({ case: "switchover", value: record("agent-rec-1", NODE_B, cid(1, NODE_B)) });
    await a.send({ case: "switchover", value: record("bad!id", NODE_A, cid(1, NODE_A)) });
    assert.equal((await refused(agg)) - before, 5);
    for (const id of ["wrong-node", "their-container", "their-shadow", "bad!id"]) assert.equal(agg.switchovers.get(id), undefined, id);
    assert.equal(agg.switchovers.get("agent-rec-1")?.node, NODE_A, "node A's record was not overwritten by B");
    // The streams go on.
    await a.send({ case: "switchover", value: record("agent-rec-2", NODE_A, cid(2, NODE_A)) });
    assert.equal(agg.switchovers.get("agent-rec-2")?.node, NODE_A, "a container not reported yet (a recreated original) is the node's to name");
  });

  it("the agent link sends every record it keeps after its sync, then each change at once", async () => {
    const NODE_L = "records-link";
    const source = new (class extends EventEmitter<{ record: [SwitchoverRecord] }> {
      records = [record("link-rec-1", NODE_L, cid(7, NODE_A)), record("link-rec-2", NODE_L, cid(8, NODE_A))];
      all() {
        return this.records;
      }
    })();
    const link = new AggregatorLink({
      address: `127.0.0.1:${agg.port}`,
      tls: "insecure",
      hello: () => create(HelloSchema, { node: NODE_L, agentVersion: "test" }),
      snapshot: () => [],
      log: silentLogger(),
      metrics: new AgentMetrics(),
      switchovers: source,
    });
    link.start();
    try {
      await link.waitSynced();
      await waitFor("kept records sent", () => (agg.switchovers.get("link-rec-2") !== undefined ? true : undefined));
      source.emit("record", record("link-rec-3", NODE_L, cid(9, NODE_A), { outcome: SwitchoverOutcome.RUNNING }));
      await waitFor("a change sent at once", () => (agg.switchovers.get("link-rec-3")?.outcome === SwitchoverOutcome.RUNNING ? true : undefined));
    } finally {
      link.stop();
    }
  });
});

describe("a waiting switchover across an aggregator restart", () => {
  const dir = tempDir("sl-switch-restart-");
  const NODE = "restart-node";
  const C = `00aa${"cd".repeat(30)}`;
  const SHADOW = `00bb${"cd".repeat(30)}`;
  const IMAGE = `sha256:${"3c".repeat(32)}`;
  const open = (runner: TestJobRunner) =>
    startAggregator({
      dataDir: join(dir.path, "agg"),
      listen: "127.0.0.1:0",
      tls: "insecure",
      log: silentLogger(),
      rebuildScheduler: { pool: new TestBuilderPool([{ name: "local", concurrency: 1 }]), runner, startupGraceMs: 0, retryMinMs: 60_000 },
      // Past its switch threshold too: the proactive trigger must not switch it a second time.
      policies: [policyFromInit({ name: "risky", labels: { tier: "risky" }, rebuild_threshold: 0, switch_threshold: 0 })],
    });
  const graph = () => Object.assign(testGraph(C, NODE, { containerName: "restart-me", imageId: IMAGE, image: "example/restart:1" }), { labels: { tier: "risky" } });

  it("keeps WAITING in level, resumes the wait, and switches once the job is ready and prepared; the same shadow is not taken again", async () => {
    let agg = await open(new TestJobRunner());
    let recId = "";
    let jobId = "";
    try {
      const agent = await connectAgent(makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials("insecure")), NODE);
      await publish(agent, [upsertOf(graph())]);
      const admin = makeClient(AdminService, `127.0.0.1:${agg.port}`, channelCredentials("insecure"));
      const rec = await callUnary(admin, AdminService.method.switchover, { container: "restart-me", rebuildIfMissing: true });
      admin.close();
      agent.close();
      assert.equal(rec.outcome, SwitchoverOutcome.WAITING);
      recId = rec.id;
      jobId = rec.waitingForJob;
    } finally {
      await agg.stop();
    }
    const runner = new TestJobRunner();
    agg = await open(runner);
    try {
      assert.equal(agg.switchovers.get(recId)?.outcome, SwitchoverOutcome.WAITING, "read back from level");
      const agent = await connectAgent(makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials("insecure")), NODE);
      agent.answer = (cmd) => ({
        status: CommandStatus.OK,
        switchover: record(cmd.id, NODE, C, { shadowContainerId: SHADOW, outcome: SwitchoverOutcome.SUCCEEDED, updatedAt: timestampFromDate(new Date()) }),
      });
      await publish(agent, [upsertOf(graph()), { case: "syncComplete", value: { containerIds: [C] } }]);
      // The job was forced before the stop; the new scheduler builds it again.
      (await waitFor("the build", () => runner.builds.find((x) => x.job.id === jobId))).succeed();
      await waitFor("ready", () => (agg.rebuilds?.get(jobId)?.state === RebuildState.READY ? true : undefined));
      await agg.rebuilds?.notePreparation(jobId, create(ShadowPreparationSchema, { node: NODE, containerId: C, state: "prepared", shadowContainerId: SHADOW, at: timestampNow() }));
      const done = await waitFor("switched after the restart", () => (agg.switchovers.get(recId)?.outcome === SwitchoverOutcome.SUCCEEDED ? agg.switchovers.get(recId) : undefined));
      assert.equal(done.shadowContainerId, SHADOW);
      assert.equal(agent.commands[0]?.id, recId);
      // A job change makes the proactive trigger look again: a switchover to this shadow is on record.
      await agg.rebuilds?.notePreparation(jobId, create(ShadowPreparationSchema, { node: NODE, containerId: C, state: "prepared", shadowContainerId: SHADOW, at: timestampNow() }));
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(agent.commands.length, 1, "switched once");
      agent.close();
    } finally {
      await agg.stop();
    }
  });
});
