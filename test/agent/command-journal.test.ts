/**
 * Commands through the level journal: written before the handler acts and with its result after,
 * a repeated id answered from the journal (also across a restart, and over real gRPC from a real
 * aggregator to a real agent), interrupted commands listed for recovery, and the bound.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, toJson } from "@bufbuild/protobuf";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { unimplementedHandler, type CommandHandler, type CommandOutcome } from "../../agent/actions/command-handler.js";
import { CommandJournal } from "../../agent/actions/command-journal.js";
import { AgentState } from "../../agent/state/agent-state.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/server.js";
import { silentLogger } from "../../common/log.js";
import { CommandSchema, CommandStatus, type Command } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { SwitchoverOutcome, SwitchoverRecordSchema } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";

const tmp = await mkdtemp(join(tmpdir(), "sl-journal-"));
after(() => rm(tmp, { recursive: true, force: true }));
const log = silentLogger();

const prepare = (id: string, containerId = "c1"): Command => create(CommandSchema, { id, action: { case: "prepareShadow", value: { containerId, shadowImage: "reg/app@sha256:1" } } });

/** A handler that counts its calls and answers OK (or as told). */
function countingHandler(answer: (action: string) => Promise<CommandOutcome> = (a) => Promise.resolve({ status: CommandStatus.OK, message: `${a} done` })) {
  const calls: string[] = [];
  const handler: CommandHandler = {
    prepareShadow: (_, id) => (calls.push(id), answer("prepareShadow")),
    switchover: (_, id) => (calls.push(id), answer("switchover")),
    rollback: (_, id) => (calls.push(id), answer("rollback")),
  };
  return { calls, handler };
}

async function openState(dir: string): Promise<AgentState> {
  const s = new AgentState(dir, log);
  await s.start();
  return s;
}

async function stored(state: AgentState): Promise<Array<{ id: string; state: string }>> {
  const out: Array<{ id: string; state: string }> = [];
  for await (const v of state.commands.values()) out.push(v as { id: string; state: string });
  return out;
}

describe("command journal (level)", () => {
  it("writes the command before the handler acts and its result after; a repeat does not act again", async () => {
    const state = await openState(join(tmp, "a"));
    let seenWhileActing: Array<{ id: string; state: string }> = [];
    const { calls, handler } = countingHandler(async (a) => {
      seenWhileActing = await stored(state);
      return { status: CommandStatus.OK, message: `${a} done` };
    });
    const j = new CommandJournal(state.commands, handler, { log });
    await j.start();
    const [first, concurrent] = await Promise.all([j.run(prepare("cmd-1")), j.run(prepare("cmd-1"))]);
    assert.deepEqual(seenWhileActing, [{ ...seenWhileActing[0], id: "cmd-1", state: "accepted" }], "accepted is in level before the handler acts");
    assert.deepEqual([first.status, first.message, first.commandId], [CommandStatus.OK, "prepareShadow done", "cmd-1"]);
    assert.equal(concurrent, first, "a repeat while it runs gets the same answer");
    const repeat = await j.run(create(CommandSchema, { id: "cmd-1", action: { case: "rollback", value: { containerId: "c1" } } }));
    assert.equal(repeat.message, "prepareShadow done", "a repeat gets the first answer, whatever it asks");
    assert.deepEqual(calls, ["cmd-1"]);
    const rows = await stored(state);
    assert.deepEqual(rows.map((r) => [r.id, r.state]), [["cmd-1", "finished"]]);
    const e = j.entry("cmd-1");
    assert.deepEqual([e?.action, e?.container, e?.command.action.case, e?.result?.status], ["prepareShadow", "c1", "prepareShadow", CommandStatus.OK]);
    await j.stop();
    await state.stop();
  });

  it("answers a repeated id from level after a restart without acting", async () => {
    const dir = join(tmp, "b");
    let state = await openState(dir);
    const { calls, handler } = countingHandler();
    let j = new CommandJournal(state.commands, handler, { log });
    await j.start();
    const first = await j.run(prepare("cmd-2"));
    await j.stop();
    await state.stop();
    state = await openState(dir);
    j = new CommandJournal(state.commands, handler, { log });
    await j.start();
    const again = await j.run(prepare("cmd-2"));
    assert.deepEqual([again.status, again.message], [first.status, first.message]);
    assert.deepEqual(calls, ["cmd-2"]);
    await j.run(prepare("cmd-3"));
    assert.deepEqual(calls, ["cmd-2", "cmd-3"], "a new id acts");
    await j.stop();
    await state.stop();
  });

  it("lists a command the agent died in as unfinished; a repeat waits for its recovery's answer", async () => {
    const dir = join(tmp, "c");
    let state = await openState(dir);
    let release: (o: CommandOutcome) => void = () => undefined;
    const { calls, handler } = countingHandler(() => new Promise<CommandOutcome>((r) => (release = r)));
    let j = new CommandJournal(state.commands, handler, { log });
    await j.start();
    const lost = j.run(create(CommandSchema, { id: "cmd-4", action: { case: "switchover", value: { containerId: "web", shadowImage: "reg/web@sha256:2", proactive: true } } }));
    while (calls.length === 0) await new Promise((r) => setTimeout(r, 5));
    // The agent dies while the handler acts: its result never reaches level.
    await state.stop();
    release({ status: CommandStatus.OK, message: "too late" });
    await lost;

    state = await openState(dir);
    j = new CommandJournal(state.commands, handler, { log });
    await j.start();
    const open = j.unfinished();
    assert.deepEqual(open.map((e) => [e.id, e.action, e.container, e.state]), [["cmd-4", "switchover", "web", "accepted"]]);
    const cmd = open[0]?.command;
    assert.ok(cmd?.action.case === "switchover");
    assert.deepEqual([cmd.action.value.shadowImage, cmd.action.value.proactive], ["reg/web@sha256:2", true], "the whole command is kept for recovery");
    let answered = false;
    const repeat = j.run(prepare("cmd-4")).then((r) => ((answered = true), r));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(answered, false, "the repeat waits for the recovery");
    await j.finish("cmd-4", { status: CommandStatus.FAILED, message: "rolled back after an agent restart" });
    assert.equal((await repeat).message, "rolled back after an agent restart");
    assert.equal(calls.length, 1, "the handler did not run again");
    assert.deepEqual(j.unfinished(), []);
    await assert.rejects(j.finish("cmd-4", { status: CommandStatus.OK, message: "" }), /not an unfinished entry/);
    await j.stop();
    await state.stop();
  });

  it("keeps a bounded number of finished entries, oldest pruned first, never an unfinished one", async () => {
    const dir = join(tmp, "d");
    let state = await openState(dir);
    // An unfinished entry from an earlier run, older than every finished one.
    await state.commands.put("000000000001", { id: "old", action: "rollback", container: "x", receivedAt: new Date(0).toISOString(), state: "accepted", command: { id: "old", rollback: { containerId: "x" } } });
    const { handler } = countingHandler();
    let j = new CommandJournal(state.commands, handler, { log, maxFinished: 3 });
    await j.start();
    for (let i = 1; i <= 5; i++) await j.run(prepare(`n${i}`));
    assert.deepEqual([j.entry("n1"), j.entry("n2")], [undefined, undefined]);
    assert.deepEqual((await stored(state)).map((r) => r.id), ["old", "n3", "n4", "n5"]);
    await j.stop();
    await state.stop();
    state = await openState(dir);
    j = new CommandJournal(state.commands, handler, { log, maxFinished: 3 });
    await j.start();
    assert.deepEqual(j.unfinished().map((e) => e.id), ["old"]);
    assert.equal(j.entry("n5")?.result?.message, "prepareShadow done");
    assert.equal(j.entry("n5")?.state, "finished");
    await j.run(prepare("n6"));
    assert.deepEqual((await stored(state)).map((r) => r.id), ["old", "n4", "n5", "n6"], "numbering continues after a restart");
    await j.stop();
    await state.stop();
  });

  it("skips a damaged entry when it loads", async () => {
    const state = await openState(join(tmp, "f"));
    await state.commands.put("000000000001", { id: "x", state: "half-written" });
    await state.commands.put("000000000002", { id: "ok", action: "rollback", container: "c", receivedAt: new Date(0).toISOString(), state: "finished", command: { id: "ok" }, result: { commandId: "ok", status: "COMMAND_STATUS_OK", message: "fine" } });
    const j = new CommandJournal(state.commands, countingHandler().handler, { log });
    await j.start();
    assert.equal(j.entry("x"), undefined);
    assert.equal(j.entry("ok")?.result?.message, "fine");
    await j.stop();
    await state.stop();
  });

  it("answers a failing handler FAILED, journaled; refuses a command without id", async () => {
    const state = await openState(join(tmp, "e"));
    const j = new CommandJournal(state.commands, countingHandler(() => Promise.reject(new Error("engine said no"))).handler, { log });
    await j.start();
    const r = await j.run(prepare("cmd-5"));
    assert.deepEqual([r.status, r.message], [CommandStatus.FAILED, "prepareShadow failed: engine said no"]);
    assert.equal(j.entry("cmd-5")?.state, "finished");
    const noId = await j.run(prepare(""));
    assert.equal(noId.status, CommandStatus.REJECTED);
    assert.deepEqual((await stored(state)).map((x) => x.id), ["cmd-5"]);
    await j.stop();
    await state.stop();
  });

  it("carries a switchover record into the result; stop() waits for running commands only up to its deadline", async () => {
    const state = await openState(join(tmp, "g"));
    const record = create(SwitchoverRecordSchema, { id: "sw-1", outcome: SwitchoverOutcome.OBSERVING });
    let release: () => void = () => undefined;
    const { handler } = countingHandler((a) =>
      a === "switchover" ? Promise.resolve({ status: CommandStatus.OK, message: "switched", switchover: record }) : new Promise((r) => (release = () => r({ status: CommandStatus.OK, message: "late" }))),
    );
    const j = new CommandJournal(state.commands, handler, { log, stopDeadlineMs: 200 });
    await j.start();
    const r = await j.run(create(CommandSchema, { id: "sw-1", action: { case: "switchover", value: { containerId: "c1" } } }));
    assert.equal(r.switchover?.outcome, SwitchoverOutcome.OBSERVING);
    assert.equal(j.entry("sw-1")?.result?.switchover?.id, "sw-1");
    const slow = j.run(prepare("cmd-slow"));
    const t0 = Date.now();
    await j.stop();
    assert.ok(Date.now() - t0 < 2000, "stop returned at its deadline");
    assert.equal(j.entry("cmd-slow")?.state, "accepted", "still running: left for recovery");
    release();
    await slow;
    await state.stop();
  });

  it("at agent start, recovery answers a PrepareShadow the last run was cut in FAILED (to be sent again)", async () => {
    const dataDir = join(tmp, "recover");
    const state = await openState(join(dataDir, "agent-recover-node"));
    await state.commands.put("000000000001", { id: "p-1", action: "prepareShadow", container: "c1", receivedAt: new Date().toISOString(), state: "accepted", command: toJson(CommandSchema, prepare("p-1")) });
    await state.stop();
    const agent = await startAgent({ node: "recover-node", tls: "insecure", dataDir, refreshMs: 1000, execSource: "proc", inventory: false, log });
    try {
      const e = agent.journal.entry("p-1");
      assert.equal(e?.state, "finished");
      assert.equal(e?.result?.status, CommandStatus.FAILED);
      assert.match(e?.result?.message ?? "", /interrupted by the agent's stop; send it again/);
    } finally {
      await agent.stop();
    }
  });
});

describe("commands from a real aggregator to a real agent", () => {
  let aggregator: RunningAggregator;
  let agent: RunningAgent | undefined;
  const dataDir = join(tmp, "agent-data");
  const node = "journal-node";
  const calls: string[] = [];
  const handler: CommandHandler = {
    prepareShadow: (a, id) => (calls.push(id), unimplementedHandler.prepareShadow(a, id)),
    switchover: (a, id) => (calls.push(id), unimplementedHandler.switchover(a, id)),
    rollback: (a, id) => (calls.push(id), unimplementedHandler.rollback(a, id)),
  };
  const start = async (): Promise<RunningAgent> => {
    const a = await startAgent({ node, aggregator: `127.0.0.1:${aggregator.port}`, tls: "insecure", dataDir, refreshMs: 1000, execSource: "proc", inventory: false, commandHandler: handler, log });
    await a.link?.waitSynced();
    return a;
  };

  before(async () => {
    aggregator = await startAggregator({ dataDir: join(tmp, "agg"), listen: "127.0.0.1:0", tls: "insecure", log });
  });
  after(async () => {
    await agent?.stop();
    await aggregator.stop();
  });

  it("answers the same id with the stored answer after an agent restart; the handler ran once", async () => {
    agent = await start();
    const first = await aggregator.ingest.sendCommand(node, { id: "cmd-r1", action: { case: "prepareShadow", value: { containerId: "c1", shadowImage: "reg/app@sha256:1" } } });
    assert.deepEqual([first.commandId, first.status], ["cmd-r1", CommandStatus.UNIMPLEMENTED]);
    assert.match(first.message, /prepareShadow/);
    assert.deepEqual(calls, ["cmd-r1"]);

    await agent?.stop();
    agent = undefined;
    agent = await start();
    const again = await aggregator.ingest.sendCommand(node, { id: "cmd-r1", action: { case: "switchover", value: { containerId: "c1" } } });
    assert.deepEqual([again.commandId, again.status, again.message], [first.commandId, first.status, first.message], "the first answer, not the switchover's");
    assert.deepEqual(calls, ["cmd-r1"], "the handler ran once");

    const other = await aggregator.ingest.sendCommand(node, { id: "cmd-r2", action: { case: "rollback", value: { containerId: "c1" } } });
    assert.match(other.message, /rollback/);
    assert.deepEqual(calls, ["cmd-r1", "cmd-r2"], "a new id reaches the handler");
    assert.equal(agent.journal.entry("cmd-r1")?.state, "finished");
  });
});
