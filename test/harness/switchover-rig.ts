/**
 * The switchover parts as the agent wires them, without the rest of the agent: a real level
 * database (the `commands` and `switchovers` sublevels), the command journal, the record store,
 * the TCP proxy and the state machine, on the real engine (or a relay to it).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type Docker from "dockerode";
import { Level } from "level";
import { unimplemented, type CommandHandler } from "../../agent/actions/command-handler.js";
import { CommandJournal } from "../../agent/actions/command-journal.js";
import { SwitchoverMachine, type SwitchoverMachineOptions } from "../../agent/actions/switchover/switchover-machine.js";
import { SwitchoverRecords } from "../../agent/actions/switchover/switchover-records.js";
import { TcpProxy } from "../../agent/actions/traffic/tcp-proxy.js";
import type { Logger } from "../../common/log.js";
import { CommandSchema, RollbackSchema, SwitchoverSchema, type CommandResult, type Rollback, type Switchover } from "../../proto/gen/shadowlayer/v1/agent_pb.js";

export interface SwitchoverRig {
  db: Level<string, unknown>;
  records: SwitchoverRecords;
  proxy: TcpProxy;
  machine: SwitchoverMachine;
  journal: CommandJournal;
  switchover(a: Partial<Omit<Switchover, "$typeName">> & { containerId: string }, id?: string): Promise<CommandResult>;
  rollback(a: Partial<Omit<Rollback, "$typeName">> & { containerId: string }, id?: string): Promise<CommandResult>;
  close(): Promise<void>;
}

let seq = 0;

export async function switchoverRig(docker: Docker, log: Logger, extra: Partial<SwitchoverMachineOptions> = {}, dir?: string): Promise<SwitchoverRig> {
  const own = dir === undefined;
  const path = dir ?? (await mkdtemp(join(tmpdir(), "sl-switch-")));
  const db = new Level<string, unknown>(path, { keyEncoding: "utf8", valueEncoding: "json" });
  await db.open();
  const records = new SwitchoverRecords(db.sublevel<string, unknown>("switchovers", { valueEncoding: "json" }), log);
  await records.load();
  const proxy = new TcpProxy({ log });
  const machine = new SwitchoverMachine({ docker, proxy, records, node: "test", log, settleMs: 300, ...extra });
  const handler: CommandHandler = {
    prepareShadow: () => Promise.resolve(unimplemented("prepareShadow")),
    switchover: (a, id) => machine.switchover(a, id),
    rollback: (a, id) => machine.rollback(a, id),
  };
  const journal = new CommandJournal(db.sublevel<string, unknown>("commands", { valueEncoding: "json" }), handler, { log });
  await journal.start();
  const run = (action: Parameters<typeof create<typeof CommandSchema>>[1] extends infer T ? T : never, id?: string) =>
    journal.run(create(CommandSchema, { id: id ?? `t-${process.pid}-${++seq}`, ...(action as object) }));
  return {
    db,
    records,
    proxy,
    machine,
    journal,
    switchover: (a, id) => run({ action: { case: "switchover", value: create(SwitchoverSchema, a) } }, id),
    rollback: (a, id) => run({ action: { case: "rollback", value: create(RollbackSchema, a) } }, id),
    close: async () => {
      await journal.stop();
      await machine.stop();
      await proxy.close();
      await db.close();
      if (own) await rm(path, { recursive: true, force: true });
    },
  };
}
