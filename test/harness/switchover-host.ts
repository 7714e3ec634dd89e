/**
 * A child process hosting the agent's switchover parts as the agent wires them (its state
 * database, command journal, record store, proxy, machine, recovery and service routes), for the
 * crash tests: started, it recovers what an earlier run left, serves the test's services, prints
 * `{"ready":…}` with the records, then (if SL_HOST_SWITCH names a container) runs one switchover
 * through the journal and prints its result. SHADOWLAYER_TEST_KILL_AFTER_STEP makes it SIGKILL
 * itself after that step. It runs until SIGTERM.
 */
import { join } from "node:path";
import { create, toJson } from "@bufbuild/protobuf";
import { CommandJournal } from "../../agent/actions/command-journal.js";
import { unimplemented } from "../../agent/actions/command-handler.js";
import { ServiceRoutes } from "../../agent/actions/switchover/service-routes.js";
import { SwitchoverMachine } from "../../agent/actions/switchover/switchover-machine.js";
import { SwitchoverRecords } from "../../agent/actions/switchover/switchover-records.js";
import { recoverInterrupted } from "../../agent/actions/switchover/switchover-recovery.js";
import { TcpProxy } from "../../agent/actions/traffic/tcp-proxy.js";
import { AgentState } from "../../agent/state/agent-state.js";
import { connectEngine } from "../../common/engine.js";
import { silentLogger } from "../../common/log.js";
import { CommandResultSchema, CommandSchema, SwitchoverSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { DataMode, SwitchoverRecordSchema } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { TEST_LABEL } from "./engine.js";

const env = (k: string) => process.env[k] ?? "";
const log = silentLogger();
const { docker } = await connectEngine("/var/run/docker.sock");
const state = new AgentState(join(env("SL_HOST_DIR"), "agent-test"), log);
await state.start();
const records = new SwitchoverRecords(state.switchovers, log);
await records.load();
const proxy = new TcpProxy({ log });
const machine = new SwitchoverMachine({ docker, proxy, records, node: "test", log, bounds: { observeMs: 500, drainTimeoutMs: 1000 }, settleMs: 300 });
const journal = new CommandJournal(state.commands, { prepareShadow: () => Promise.resolve(unimplemented("prepareShadow")), switchover: (a, id) => machine.switchover(a, id), rollback: (a, id) => machine.rollback(a, id) }, { log });
await journal.start();
await recoverInterrupted(journal, machine, records, log);
const routes = new ServiceRoutes(docker, proxy, (k) => machine.isBusy(k), log, (l) => l[TEST_LABEL] === env("SL_HOST_OWNER"));
await routes.refresh();
const entries = (id: string) => {
  const e = journal.entry(id);
  return e === undefined ? undefined : { state: e.state, result: e.result === undefined ? undefined : toJson(CommandResultSchema, e.result) };
};
const print = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
print({ ready: records.all().map((r) => toJson(SwitchoverRecordSchema, r)), journal: entries(env("SL_HOST_COMMAND")) });

const target = env("SL_HOST_SWITCH");
if (target !== "") {
  const mode = env("SL_HOST_MODE") === "exclusive" ? DataMode.EXCLUSIVE : DataMode.SHARED;
  const r = await journal.run(create(CommandSchema, { id: env("SL_HOST_COMMAND"), action: { case: "switchover", value: create(SwitchoverSchema, { containerId: target, mode }) } }));
  print({ result: toJson(CommandResultSchema, r) });
}

process.once("SIGTERM", () => {
  void (async () => {
    await journal.stop();
    await machine.stop();
    await proxy.close();
    await state.stop();
    process.exit(0);
  })();
});
