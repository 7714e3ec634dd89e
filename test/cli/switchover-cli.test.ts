/**
 * `shadowlayer switchover`, `rollback` and `history`, run as the real CLI against a real
 * aggregator (insecure loopback, its rebuild scheduler on the test doubles) while a test peer
 * plays the node's agent: it takes each Switchover command (RUNNING), then reports each step and
 * the end through AgentMessage.switchover, as an agent does. Shows the steps as they complete,
 * the outcome and the exit status, the wait for a rebuild, JSON, and hostile strings made safe.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { AgentService, CommandStatus, type Command } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AdminService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { RebuildState, ShadowPreparationSchema } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { SwitchoverKind, SwitchoverOutcome, SwitchoverRecordSchema, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentStream, type CommandAnswer } from "../harness/agent-stream.js";
import { TestBuilderPool, TestJobRunner } from "../harness/rebuild-test-doubles.js";
import { publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const NODE = "cli-switch-node";
const CLI = join(PACKAGE_ROOT, "dist", "cli", "main.js");
const execFileP = promisify(execFile);
const id = (n: number) => `${n.toString(16).padStart(4, "0")}${"c1".repeat(30)}`;
const shadowId = (n: number) => `${n.toString(16).padStart(4, "0")}${"c2".repeat(30)}`;
const imageId = (n: number) => `sha256:${(0x40 + n).toString(16).repeat(32)}`;
const HOSTILE = "\x1b]0;pwned\x07\u202eevil";

describe("switchover, rollback and history commands", () => {
  const dir = tempDir("sl-switch-cli-");
  let agg: RunningAggregator;
  let admin: grpc.Client;
  let agent: AgentStream;
  let address: string;
  const runner = new TestJobRunner();
  /** How the test's agent ends each switchover: its outcome and error. */
  let ending: { outcome: SwitchoverOutcome; error?: string } = { outcome: SwitchoverOutcome.SUCCEEDED };

  const cli = (...args: string[]) => execFileP(process.execPath, [CLI, ...args, "--aggregator", address, "--insecure"], { timeout: 60_000 });
  const cliFails = async (...args: string[]): Promise<{ stdout: string; stderr: string }> => {
    try {
      await cli(...args);
    } catch (err) {
      const e = err as { code?: number; stdout: string; stderr: string };
      assert.equal(e.code, 1);
      return e;
    }
    assert.fail(`shadowlayer ${args.join(" ")} exited 0`);
  };

  const report = (r: SwitchoverRecord, patch: Omit<MessageInitShape<typeof SwitchoverRecordSchema>, "$typeName">) =>
    agent.send({ case: "switchover", value: create(SwitchoverRecordSchema, { id: r.id, kind: r.kind, node: r.node, containerId: r.containerId, outcome: r.outcome, ...patch, updatedAt: timestampNow() }) });

  /** Plays the agent: RUNNING at once, then each step and the end as separate reports. */
  function answer(cmd: Command): CommandAnswer {
    if (cmd.action.case !== "switchover" && cmd.action.case !== "rollback") return { status: CommandStatus.UNIMPLEMENTED };
    const v = cmd.action.value;
    const kind = cmd.action.case === "switchover" ? SwitchoverKind.SWITCHOVER : SwitchoverKind.ROLLBACK;
    const base = create(SwitchoverRecordSchema, { id: cmd.id, kind, node: NODE, containerId: v.containerId, outcome: SwitchoverOutcome.RUNNING, updatedAt: timestampNow() });
    const step = (name: string, durationMs: number, message = "") => ({ name, state: "done", durationMs, message, startedAt: timestampFromDate(new Date()) });
    const end = kind === SwitchoverKind.ROLLBACK ? { outcome: SwitchoverOutcome.SUCCEEDED } : ending;
    setTimeout(() => {
      void (async () => {
        await report(base, { steps: [step("snapshot", 41)] });
        await report(base, { steps: [step("snapshot", 41), step("start-shadow", 87, HOSTILE)] });
        await report(base, { steps: [step("snapshot", 41), step("start-shadow", 87, HOSTILE), step("redirect", 2)], switchMs: 95, outcome: end.outcome, error: end.error ?? "", finishedAt: timestampNow() });
      })().catch(() => undefined);
    }, 150);
    return { status: CommandStatus.OK, switchover: base };
  }

  async function readyShadow(n: number): Promise<void> {
    const job = await callUnary(admin, AdminService.method.forceRebuild, { image: imageId(n) });
    (await waitFor(`build of ${job.id}`, () => runner.builds.find((b) => b.job.id === job.id))).succeed();
    await waitFor("ready", () => (agg.rebuilds?.get(job.id)?.state === RebuildState.READY ? true : undefined));
    await agg.rebuilds?.notePreparation(job.id, create(ShadowPreparationSchema, { node: NODE, containerId: id(n), state: "prepared", shadowContainerId: shadowId(n), at: timestampNow() }));
  }

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger(), rebuildScheduler: { pool: new TestBuilderPool([{ name: "local", concurrency: 2 }]), runner, startupGraceMs: 0, retryMinMs: 60_000 } });
    address = `127.0.0.1:${agg.port}`;
    admin = makeClient(AdminService, address, channelCredentials("insecure"));
    agent = await connectAgent(makeClient(AgentService, address, channelCredentials("insecure")), NODE);
    agent.answer = answer;
    const graphs = [1, 2, 3, 4].map((n) => testGraph(id(n), NODE, { containerName: n === 4 ? `web${HOSTILE}` : `web-${n}`, imageId: imageId(n), image: `example/web-${n}:1` }));
    await publish(agent, [...graphs.map(upsertOf), { case: "syncComplete", value: { containerIds: graphs.map((g) => g.containerId) } }]);
    await waitFor("graphs", () => (agg.store.size === graphs.length ? true : undefined));
  });
  after(async () => {
    agent.close();
    admin.close();
    await agg.stop();
  });

  it("switchover follows the steps to the outcome and exits 0; rollback likewise; a second rollback exits 1", async () => {
    await readyShadow(1);
    const { stdout } = await cli("switchover", "web-1", "--reason", "patch CVE-2023-4911");
    const lines = stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^switchover so-[0-9a-f]+ of web-1 → [0-9a-f]{12} on node cli-switch-node \(patch CVE-2023-4911\)$/);
    assert.deepEqual(lines.slice(1, 4).map((l) => l.trim().split(/\s+/).slice(0, 3).join(" ")), ["snapshot done 41ms", "start-shadow done 87ms", "redirect done 2ms"]);
    assert.ok(lines[2]?.includes("\\x1b]0;pwned\\x07\\u202eevil"), "a step's message is escaped");
    assert.match(lines[lines.length - 1] ?? "", /^switchover so-[0-9a-f]+: succeeded \(switched in 95ms\)$/);
    assert.ok(!stdout.includes("\x1b"));

    const rb = await cli("rollback", "web-1");
    assert.match(rb.stdout.trimEnd().split("\n").pop() ?? "", /^rollback rb-[0-9a-f]+: succeeded/);
    const again = await cliFails("rollback", "web-1");
    assert.match(again.stderr, /nothing to roll back for web-1: its last switchover so-[0-9a-f]+ is rolled-back/);
  });

  it("exits 1 on an unknown container and on a switchover that ended rolled back; --no-wait --json prints the accepted record", async () => {
    assert.match((await cliFails("switchover", "no-such-web")).stderr, /no container no-such-web is known/);
    assert.match((await cliFails("switchover", "web-2")).stderr, /no shadow is ready and prepared for web-2/);
    await assert.rejects(cli("switchover", "web-2", "--mode", "sideways"), /--mode: expected exclusive or shared/);
    await readyShadow(2);
    ending = { outcome: SwitchoverOutcome.ROLLED_BACK, error: "health gate: the shadow did not answer within 10 s" };
    try {
      const failed = await cliFails("switchover", "web-2");
      assert.match(failed.stdout, /: rolled-back \(switched in 95ms; health gate: the shadow did not answer within 10 s\)/);
      assert.match(failed.stderr, /^shadowlayer: switchover so-[0-9a-f]+ rolled-back: health gate/);
    } finally {
      ending = { outcome: SwitchoverOutcome.SUCCEEDED };
    }
    await readyShadow(4);
    const accepted = JSON.parse((await cli("switchover", id(4).slice(0, 12), "--no-wait", "--json", "--mode", "exclusive")).stdout) as { outcome: string; mode: string; containerName: string };
    assert.equal(accepted.outcome, "SWITCHOVER_OUTCOME_RUNNING");
    assert.equal(accepted.mode, "DATA_MODE_EXCLUSIVE");
    await waitFor("web4 done", () => (agg.switchovers.all().some((r) => r.containerId === id(4) && r.outcome === SwitchoverOutcome.SUCCEEDED) ? true : undefined));
  });

  it("--rebuild-if-missing shows the wait for the rebuild, then the switchover", async () => {
    const run = cli("switchover", "web-3", "--rebuild-if-missing");
    const waiting = await waitFor("waiting record", () => agg.switchovers.all().find((r) => r.containerId === id(3) && r.outcome === SwitchoverOutcome.WAITING), 20_000);
    (await waitFor("build", () => runner.builds.find((b) => b.job.id === waiting.waitingForJob))).succeed();
    await waitFor("ready", () => (agg.rebuilds?.get(waiting.waitingForJob)?.state === RebuildState.READY ? true : undefined));
    await agg.rebuilds?.notePreparation(waiting.waitingForJob, create(ShadowPreparationSchema, { node: NODE, containerId: id(3), state: "prepared", shadowContainerId: shadowId(3), at: timestampNow() }));
    const { stdout } = await run;
    const lines = stdout.trimEnd().split("\n");
    assert.equal(lines[0], `waiting for rebuild job ${waiting.waitingForJob} (no shadow was ready and prepared; it goes on once one is)`);
    assert.match(lines[1] ?? "", /^switchover so-[0-9a-f]+ of web-3 → /);
    assert.match(lines[lines.length - 1] ?? "", /: succeeded/);
  });

  it("history: a terminal-safe table newest first, --container, and JSON with the exact strings", async () => {
    const { stdout } = await cli("history");
    const lines = stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^TIME\s+CONTAINER\s+KIND\s+TRIGGER\s+OUTCOME\s+SWITCH\s+STEPS\s+REASON$/);
    assert.ok(!stdout.includes("\x1b") && !stdout.includes("\u202e"), "no raw control or bidi character reaches the terminal");
    assert.ok(stdout.includes("web\\x1b]0;pwned\\x07\\u202eevil"), "the hostile name is shown escaped");
    assert.match(lines[1] ?? "", /^\S+ \S+\s+web-3 → [0-9a-f]{12}\s+switchover\s+manual\s+succeeded\s+95ms\s+snapshot 41ms, start-shadow 87ms, redirect 2ms\s+asked for by an operator$/);
    assert.equal(lines.length, 1 + 5, "header and five records (three switchovers, one rollback, one rolled back)");
    const only = (await cli("history", "--container", "web-1")).stdout.trimEnd().split("\n");
    assert.equal(only.length, 3, "web-1's switchover and its rollback");
    assert.match(only[1] ?? "", /rollback/);
    const json = JSON.parse((await cli("history", "--json")).stdout) as Array<{ containerName?: string; steps: Array<{ message?: string }> }>;
    assert.equal(json.length, 5);
    assert.ok(json.some((r) => r.steps.some((s) => s.message === HOSTILE)), "JSON keeps the exact string");
    const help = (await cli("history", "--help")).stdout;
    assert.match(help, /--watch/);
  });

  it("policy set --switch-on-drift sets it, and policy list shows it", async () => {
    assert.match((await cli("policy", "set", "drifty", "--label", "tier=drifty", "--rebuild", "50", "--switch", "90", "--switch-on-drift")).stdout, /^policy drifty set: rebuild at 50, switch at 90, switch on drift$/m);
    assert.match((await cli("policy", "set", "calm", "--rebuild", "50", "--switch", "90")).stdout, /^policy calm set: rebuild at 50, switch at 90$/m);
    const table = (await cli("policy", "list")).stdout.split("\n");
    assert.match(table[0] ?? "", /ON DRIFT$/);
    assert.match(table.find((l) => l.startsWith("drifty")) ?? "", /switch$/);
    assert.match(table.find((l) => l.startsWith("calm")) ?? "", /-$/);
    assert.equal(agg.scores.listPolicies().find((p) => p.name === "drifty")?.switchOnDrift, true);
  });
});
