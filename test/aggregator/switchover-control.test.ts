/**
 * The switchover control on a real aggregator (real level, real gRPC, insecure loopback), its
 * rebuild scheduler given the test doubles of the pool and the runner, and a test peer that plays
 * the agent: it publishes graphs on its AgentService stream and answers the Switchover and
 * Rollback commands the aggregator sends as an agent would (OK with its record). Shows: NOT_FOUND
 * and INVALID_ARGUMENT for unknown and malformed containers; two requests at once → one goes, the
 * other FAILED_PRECONDITION; no shadow → refused, or WAITING then switched once the job is ready
 * and prepared; proactive switchover once per (container, shadow) and never for a shadow or a
 * stopped container; drift with switch_on_drift; rollback, and FAILED_PRECONDITION for a
 * rolled-back or never-switched container.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { AgentService, CommandStatus, type Command } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AdminService, QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { RebuildState, ShadowPreparationSchema } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { SwitchoverKind, SwitchoverOutcome, SwitchoverRecordSchema, SwitchoverTrigger, type SwitchoverEvent } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { TelemetryItemSchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { callServerStream, callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { policyFromInit, startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentStream, type CommandAnswer } from "../harness/agent-stream.js";
import { TestBuilderPool, TestJobRunner } from "../harness/rebuild-test-doubles.js";
import { publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const NODE = "switch-node";
const imageId = (n: number) => `sha256:${n.toString(16).padStart(2, "0").repeat(32)}`;
/** Distinct in their first 12 hex digits, as real ids are. */
const id = (n: number) => `${n.toString(16).padStart(4, "0")}${"5c".repeat(30)}`;
const shadowId = (n: number) => `${n.toString(16).padStart(4, "0")}${"5d".repeat(30)}`;
/** Containers of the test, each with an image of its own (so each has its own rebuild job). */
const C = {
  manual: 1,
  racing: 2,
  waiting: 3,
  risky: 4,
  riskyStopped: 5,
  riskyShadow: 6,
  drifty: 7,
  never: 8,
} as const;

/** The agent's answer to a switchover or rollback: done, with its record as an agent reports it. */
function agentAnswer(cmd: Command): CommandAnswer {
  const now = new Date();
  if (cmd.action.case === "switchover") {
    const s = cmd.action.value;
    return {
      status: CommandStatus.OK,
      switchover: create(SwitchoverRecordSchema, {
        id: cmd.id,
        kind: SwitchoverKind.SWITCHOVER,
        node: NODE,
        containerId: s.containerId,
        shadowContainerId: s.shadowContainerId,
        trigger: s.trigger,
        outcome: SwitchoverOutcome.SUCCEEDED,
        switchMs: 93,
        steps: [
          { name: "snapshot", state: "done", durationMs: 40 },
          { name: "start-shadow", state: "done", durationMs: 85 },
          { name: "redirect", state: "done", durationMs: 1 },
        ],
        finishedAt: timestampFromDate(now),
        updatedAt: timestampFromDate(now),
      }),
    };
  }
  if (cmd.action.case === "rollback") {
    const b = cmd.action.value;
    return {
      status: CommandStatus.OK,
      switchover: create(SwitchoverRecordSchema, { id: cmd.id, kind: SwitchoverKind.ROLLBACK, node: NODE, containerId: b.containerId, rollbackOf: b.switchoverId, outcome: SwitchoverOutcome.SUCCEEDED, updatedAt: timestampFromDate(now) }),
    };
  }
  return { status: CommandStatus.UNIMPLEMENTED, message: "not this test's" };
}

describe("switchover control", () => {
  const dir = tempDir("sl-switch-control-");
  let agg: RunningAggregator;
  let query: grpc.Client;
  let admin: grpc.Client;
  let agent: AgentStream;
  const pool = new TestBuilderPool([{ name: "local", concurrency: 4 }]);
  const runner = new TestJobRunner();
  const code = (c: grpc.status, re?: RegExp) => (err: grpc.ServiceError) => err.code === c && (re === undefined || re.test(err.details));

  /** A READY job of container n's image, prepared on the node for it (shadow container shadowId(n)). */
  async function readyShadow(n: number, prepareFor: number[] = [n]): Promise<string> {
    const job = await callUnary(admin, AdminService.method.forceRebuild, { image: imageId(n) });
    const build = await waitFor(`build of ${job.id}`, () => runner.builds.find((b) => b.job.id === job.id));
    build.succeed();
    await waitFor("job ready", () => (agg.rebuilds?.get(job.id)?.state === RebuildState.READY ? true : undefined));
    for (const c of prepareFor) await prepare(job.id, c);
    return job.id;
  }

  async function prepare(jobId: string, n: number): Promise<void> {
    await agg.rebuilds?.notePreparation(jobId, create(ShadowPreparationSchema, { node: NODE, containerId: id(n), state: "prepared", shadowContainerId: shadowId(n), at: timestampNow() }));
  }

  const commandsFor = (n: number) => agent.commands.filter((c) => (c.action.case === "switchover" || c.action.case === "rollback") && c.action.value.containerId === id(n));

  before(async () => {
    agg = await startAggregator({
      dataDir: join(dir.path, "agg"),
      listen: "127.0.0.1:0",
      tls: "insecure",
      log: silentLogger(),
      rebuildScheduler: { pool, runner, startupGraceMs: 0, retryMinMs: 60_000 },
      policies: [
        policyFromInit({ name: "risky", labels: { tier: "risky" }, rebuild_threshold: 0, switch_threshold: 0, order: 1 }),
        policyFromInit({ name: "drifty", labels: { tier: "drifty" }, rebuild_threshold: 100, switch_threshold: 100, order: 2, switch_on_drift: true }),
      ],
    });
    const address = `127.0.0.1:${agg.port}`;
    query = makeClient(QueryService, address, channelCredentials("insecure"));
    admin = makeClient(AdminService, address, channelCredentials("insecure"));
    agent = await connectAgent(makeClient(AgentService, address, channelCredentials("insecure")), NODE);
    agent.answer = agentAnswer;
    const g = (n: number, extra: Parameters<typeof testGraph>[2] & { labels?: Record<string, string> } = {}) => {
      const { labels, ...rest } = extra;
      return Object.assign(testGraph(id(n), NODE, { containerName: `sw-${n}`, image: `example/sw-${n}:1`, imageId: imageId(n), ...rest }), { labels: labels ?? {} });
    };
    const graphs = [
      g(C.manual),
      g(C.racing),
      g(C.waiting),
      g(C.never),
      g(C.risky, { labels: { tier: "risky" } }),
      g(C.riskyStopped, { labels: { tier: "risky" }, state: "exited" }),
      g(C.riskyShadow, { labels: { tier: "risky", "shadowlayer.shadow-of": id(C.risky) } }),
      g(C.drifty, { labels: { tier: "drifty" } }),
    ];
    // A full sync: the node counts as connected, which a waiting switchover needs to go on.
    await publish(agent, [...graphs.map(upsertOf), { case: "syncComplete", value: { containerIds: graphs.map((x) => x.containerId) } }]);
    assert.equal(agg.store.size, graphs.length);
  });
  after(async () => {
    for (const c of [agent, query, admin]) c.close();
    await agg.stop();
  });

  it("answers NOT_FOUND for an unknown container, INVALID_ARGUMENT for a short prefix or a malformed name, and FAILED_PRECONDITION without a shadow", async () => {
    await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: "no-such-container" }), code(grpc.status.NOT_FOUND));
    await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: "ffffffffffffffff" }), code(grpc.status.NOT_FOUND));
    await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: id(C.manual).slice(0, 8) }), code(grpc.status.INVALID_ARGUMENT, /at least 12/));
    await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: "evil\x1b]0;x" }), code(grpc.status.INVALID_ARGUMENT));
    await assert.rejects(callUnary(admin, AdminService.method.rollback, { container: "no-such-container" }), code(grpc.status.NOT_FOUND));
    await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: `sw-${C.manual}` }), code(grpc.status.FAILED_PRECONDITION, /rebuild_if_missing/));
    await assert.rejects(callUnary(admin, AdminService.method.rollback, { container: `sw-${C.never}` }), code(grpc.status.FAILED_PRECONDITION, /never switched over/));
    assert.equal(commandsFor(C.manual).length, 0, "nothing was sent");
  });

  it("switches a container by a 12-digit id prefix to its prepared shadow, records the agent's answer, then rolls back once and no more", async () => {
    const job = await readyShadow(C.manual);
    const rec = await callUnary(admin, AdminService.method.switchover, { container: id(C.manual).slice(0, 12), reason: "operator says so" });
    assert.equal(rec.outcome, SwitchoverOutcome.SUCCEEDED);
    assert.equal(rec.trigger, SwitchoverTrigger.MANUAL);
    assert.equal(rec.reason, "operator says so", "the aggregator's reason stays where the agent's record has none");
    assert.equal(rec.jobId, job);
    assert.deepEqual(rec.steps.map((s) => s.name), ["snapshot", "start-shadow", "redirect"]);
    const [cmd] = commandsFor(C.manual);
    assert.ok(cmd?.action.case === "switchover");
    assert.equal(cmd.id, rec.id, "the record's id is the command's");
    assert.equal(cmd.action.value.shadowContainerId, shadowId(C.manual));
    assert.equal(cmd.action.value.shadowImage, `sha256:shadow-of-${job}`);
    assert.equal(cmd.action.value.jobId, job);
    assert.equal(cmd.action.value.trigger, SwitchoverTrigger.MANUAL);
    const listed = await callUnary(query, QueryService.method.listSwitchovers, { container: `sw-${C.manual}` });
    assert.deepEqual(listed.records.map((r) => [r.id, r.outcome]), [[rec.id, SwitchoverOutcome.SUCCEEDED]]);

    // Rollback by the shadow's id: the switchover it undoes is named, and is rolled back after.
    const rb = await callUnary(admin, AdminService.method.rollback, { container: shadowId(C.manual), reason: "back please" });
    assert.equal(rb.kind, SwitchoverKind.ROLLBACK);
    assert.equal(rb.outcome, SwitchoverOutcome.SUCCEEDED);
    assert.equal(rb.rollbackOf, rec.id);
    const rbCmd = commandsFor(C.manual).find((c) => c.action.case === "rollback");
    assert.ok(rbCmd?.action.case === "rollback");
    assert.equal(rbCmd.action.value.switchoverId, rec.id);
    await waitFor("the switchover marked rolled back", () => (agg.switchovers.get(rec.id)?.outcome === SwitchoverOutcome.ROLLED_BACK ? true : undefined));
    await assert.rejects(callUnary(admin, AdminService.method.rollback, { container: `sw-${C.manual}` }), code(grpc.status.FAILED_PRECONDITION, /rolled-back|rolled_back/i));
  });

  it("two switchovers of one container at once: one goes, the other gets FAILED_PRECONDITION", async () => {
    await readyShadow(C.racing);
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    agent.answer = async (cmd) => {
      await gate;
      return agentAnswer(cmd);
    };
    try {
      const both = [callUnary(admin, AdminService.method.switchover, { container: `sw-${C.racing}` }), callUnary(admin, AdminService.method.switchover, { container: id(C.racing) })];
      const loser = await Promise.race(both.map((p, i) => p.then(() => -1, () => i)));
      assert.ok(loser >= 0, "one was refused while the other waits for the agent");
      await assert.rejects(both[loser] as Promise<unknown>, code(grpc.status.FAILED_PRECONDITION, /being decided|is running/));
      release();
      const winner = await (both[1 - loser] as Promise<{ outcome: SwitchoverOutcome }>);
      assert.equal(winner.outcome, SwitchoverOutcome.SUCCEEDED);
      assert.equal(commandsFor(C.racing).length, 1, "one command reached the agent");
    } finally {
      release();
      agent.answer = agentAnswer;
    }
  });

  it("no shadow and rebuild_if_missing: WAITING with the forced job, then switched once the job is ready AND prepared; the watch shows each state", async () => {
    const events: SwitchoverEvent[] = [];
    const stream = callServerStream(query, QueryService.method.watchSwitchovers, { container: `sw-${C.waiting}` });
    stream.on("data", (e: SwitchoverEvent) => events.push(e));
    stream.on("error", () => undefined);
    try {
      const rec = await callUnary(admin, AdminService.method.switchover, { container: `sw-${C.waiting}`, rebuildIfMissing: true, reason: "no shadow yet" });
      assert.equal(rec.outcome, SwitchoverOutcome.WAITING);
      assert.notEqual(rec.waitingForJob, "");
      const job = agg.rebuilds?.get(rec.waitingForJob);
      assert.equal(job?.forced, true, "the image's rebuild was forced");
      await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: `sw-${C.waiting}`, rebuildIfMissing: true }), code(grpc.status.FAILED_PRECONDITION, /waiting/));
      const build = await waitFor("the forced build", () => runner.builds.find((b) => b.job.id === rec.waitingForJob));
      build.succeed();
      await waitFor("job ready", () => (agg.rebuilds?.get(rec.waitingForJob)?.state === RebuildState.READY ? true : undefined));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(agg.switchovers.get(rec.id)?.outcome, SwitchoverOutcome.WAITING, "ready but not prepared on the node: still waiting");
      assert.equal(commandsFor(C.waiting).length, 0);
      await prepare(rec.waitingForJob, C.waiting);
      const done = await waitFor("switched", () => (agg.switchovers.get(rec.id)?.outcome === SwitchoverOutcome.SUCCEEDED ? agg.switchovers.get(rec.id) : undefined));
      assert.equal(done.waitingForJob, "");
      assert.equal(done.shadowContainerId, shadowId(C.waiting));
      const [cmd] = commandsFor(C.waiting);
      assert.equal(cmd?.id, rec.id, "the command carries the id the waiting record had");
      await waitFor("the watch saw it through", () => (events.some((e) => e.record?.outcome === SwitchoverOutcome.SUCCEEDED) ? true : undefined));
      const seen = events.filter((e) => e.record?.id === rec.id).map((e) => e.record?.outcome);
      assert.deepEqual([...new Set(seen)], [SwitchoverOutcome.WAITING, SwitchoverOutcome.RUNNING, SwitchoverOutcome.SUCCEEDED]);
    } finally {
      stream.cancel();
    }
  });

  it("proactive: a container past its switch threshold is switched once its shadow is ready and prepared, once per shadow; never a shadow or a stopped container", async () => {
    assert.equal(commandsFor(C.risky).length, 0, "no shadow yet: nothing");
    const job = await readyShadow(C.risky, [C.risky, C.riskyStopped, C.riskyShadow]);
    const rec = await waitFor("proactive switchover", () => agg.switchovers.all().find((r) => r.containerId === id(C.risky) && r.outcome === SwitchoverOutcome.SUCCEEDED));
    assert.equal(rec.trigger, SwitchoverTrigger.PROACTIVE);
    assert.equal(rec.jobId, job);
    assert.match(rec.reason, /^risk 0\.0 ≥ switch threshold 0 \(policy risky\)/);
    const [cmd] = commandsFor(C.risky);
    assert.ok(cmd?.action.case === "switchover");
    assert.equal(cmd.action.value.proactive, true);
    // Rolled back: the same shadow is never taken again, however often scores or jobs change.
    await callUnary(admin, AdminService.method.rollback, { container: `sw-${C.risky}` });
    await prepare(job, C.risky);
    await callUnary(admin, AdminService.method.setPolicy, { policy: policyFromInit({ name: "risky", labels: { tier: "risky" }, rebuild_threshold: 0, switch_threshold: 0, order: 3 }) });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(commandsFor(C.risky).filter((c) => c.action.case === "switchover").length, 1, "switched once");
    assert.equal(commandsFor(C.riskyStopped).length, 0, "a stopped container is not switched");
    assert.equal(commandsFor(C.riskyShadow).length, 0, "a shadow is not switched");
  });

  it("drift in a container whose policy says switch_on_drift switches it, naming the path", async () => {
    await readyShadow(C.drifty);
    assert.equal(commandsFor(C.drifty).length, 0, "risk alone does not switch it");
    await agent.send({
      case: "telemetry",
      value: create(TelemetryItemSchema, {
        spoolId: "sp-drift",
        spoolSeq: 1n,
        body: { case: "detection", value: { id: "d1", node: NODE, containerId: id(C.drifty), layerId: `rw:${id(C.drifty)}`, rule: "drift", reason: "added", path: "/tmp/miner", pid: 42, at: timestampNow() } },
      }),
    });
    const rec = await waitFor("drift switchover", () => agg.switchovers.all().find((r) => r.containerId === id(C.drifty)));
    assert.equal(rec.trigger, SwitchoverTrigger.DRIFT);
    assert.match(rec.reason, /drift: \/tmp\/miner \(added\)/);
    await waitFor("done", () => (agg.switchovers.get(rec.id)?.outcome === SwitchoverOutcome.SUCCEEDED ? true : undefined));
  });

  it("maps the agent's answers: REJECTED → FAILED_PRECONDITION (record refused), UNIMPLEMENTED → UNIMPLEMENTED (record failed); no agent connected → FAILED_PRECONDITION, nothing recorded", async () => {
    // The manual test's container was rolled back: an operator may switch it to the same shadow again.
    try {
      agent.answer = () => ({ status: CommandStatus.REJECTED, message: "a switchover is already running for this container" });
      await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: `sw-${C.manual}` }), code(grpc.status.FAILED_PRECONDITION, /already running/));
      agent.answer = () => ({ status: CommandStatus.UNIMPLEMENTED, message: "switchover is not implemented" });
      await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: `sw-${C.manual}` }), code(grpc.status.UNIMPLEMENTED));
    } finally {
      agent.answer = agentAnswer;
    }
    const mine = agg.switchovers.all().filter((r) => r.containerId === id(C.manual) && r.kind === SwitchoverKind.SWITCHOVER);
    assert.deepEqual(mine.map((r) => r.outcome).sort(), [SwitchoverOutcome.ROLLED_BACK, SwitchoverOutcome.FAILED, SwitchoverOutcome.REFUSED].sort());

    const GONE = "gone-node";
    const other = await connectAgent(makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials("insecure")), GONE);
    const g = Object.assign(testGraph(id(9), GONE, { containerName: "sw-gone", image: "example/sw-9:1", imageId: imageId(9) }), { labels: { tier: "risky" } });
    await publish(other, [upsertOf(g), { case: "syncComplete", value: { containerIds: [g.containerId] } }]);
    other.close();
    await waitFor("node gone", () => (agg.ingest.connectedNodes().includes(GONE) ? undefined : true));
    const job = await callUnary(admin, AdminService.method.forceRebuild, { image: imageId(9) });
    (await waitFor("build", () => runner.builds.find((b) => b.job.id === job.id))).succeed();
    await waitFor("ready", () => (agg.rebuilds?.get(job.id)?.state === RebuildState.READY ? true : undefined));
    await agg.rebuilds?.notePreparation(job.id, create(ShadowPreparationSchema, { node: GONE, containerId: id(9), state: "prepared", shadowContainerId: shadowId(9), at: timestampNow() }));
    await assert.rejects(callUnary(admin, AdminService.method.switchover, { container: "sw-gone" }), code(grpc.status.FAILED_PRECONDITION, /not connected/));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(agg.switchovers.all().filter((r) => r.containerId === id(9)).length, 0, "nothing recorded, not even by the proactive trigger, while the node is away");
  });

  it("lists every record newest first in pages", async () => {
    const all = (await callUnary(query, QueryService.method.listSwitchovers, {})).records;
    assert.ok(all.length >= 6);
    const ids: string[] = [];
    let token = "";
    do {
      const page = await callUnary(query, QueryService.method.listSwitchovers, { pageSize: 2, pageToken: token });
      assert.ok(page.records.length <= 2);
      ids.push(...page.records.map((r) => r.id));
      token = page.nextPageToken;
    } while (token !== "");
    assert.deepEqual(ids, all.map((r) => r.id));
    const times = all.map((r) => Number(r.requestedAt?.seconds ?? 0n) * 1e3 + (r.requestedAt?.nanos ?? 0) / 1e6);
    assert.deepEqual(times, [...times].sort((a, b) => b - a), "newest first");
  });
});
