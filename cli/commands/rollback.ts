import type { Command } from "commander";
import { action, runtime } from "../action.js";
import { containerCommand, type JsonFlags } from "../options.js";
import { AGENT_ANSWER_MS, report } from "./switchover.js";

/** `rollback <container>`: AdminService.Rollback (the admin certificate), then its progress to the end. */
export function registerRollback(program: Command): void {
  containerCommand(program, "rollback", "bring the original back: undo the container's newest successful switchover (the original, or its shadow, by id, prefix or name); needs the admin certificate")
    .option("--reason <text>", "why, kept with the record (default: asked for by an operator)")
    .option("--no-wait", "return once the agent took the command instead of following it to its end")
    .option("--json", "the rollback's record as JSON (protobuf JSON form)")
    .addHelpText("after", "\nThe original is started again (recreated from its snapshot image if it is gone) and traffic moves back; the shadow stops.\nExits non-zero when the rollback failed or there is nothing to roll back.")
    .action(
      action(async (container: string, o: JsonFlags & { reason?: string; wait?: boolean }) => {
        const r = await runtime();
        await report(o, await r.query(o, r.AdminService.method.rollback, { container, reason: o.reason ?? "" }, { deadlineMs: AGENT_ANSWER_MS }));
      }),
    );
}
