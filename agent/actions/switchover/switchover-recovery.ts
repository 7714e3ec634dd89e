/**
 * At agent start, before the link: every switchover or rollback an earlier run left unfinished is
 * finished (switchover-machine.ts `recover`), and the command journal's unfinished entries get
 * their results, so a repeat of the command id is answered with what happened. A PrepareShadow
 * cut short is answered FAILED: the aggregator sends a new one to retry.
 */
import { CommandStatus } from "../../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { Logger } from "../../../common/log.js";
import type { CommandOutcome } from "../command-handler.js";
import type { CommandJournal } from "../command-journal.js";
import { outcomeOf, type SwitchoverMachine } from "./switchover-machine.js";
import type { SwitchoverRecords } from "./switchover-records.js";

export async function recoverInterrupted(journal: CommandJournal, machine: SwitchoverMachine, records: SwitchoverRecords, log: Logger): Promise<void> {
  await machine.recover();
  for (const e of journal.unfinished()) {
    let outcome: CommandOutcome;
    if (e.action === "switchover" || e.action === "rollback") {
      const rec = records.get(e.id);
      outcome = rec !== undefined ? outcomeOf(rec) : { status: CommandStatus.FAILED, message: `${e.action} interrupted by the agent's stop before its first step: nothing changed` };
    } else {
      outcome = { status: CommandStatus.FAILED, message: `${e.action || "command"} interrupted by the agent's stop; send it again to retry` };
    }
    await journal.finish(e.id, outcome);
    log.info({ command: e.id, action: e.action, status: CommandStatus[outcome.status] }, "interrupted command finished by recovery");
  }
}
