/**
 * What the agent does for each command the aggregator may send (proto: Command.action). The link
 * never calls a handler directly: commands reach it through the journal, which records each one
 * before it acts and its outcome after (see command-journal.ts).
 */
import { CommandStatus, type ModelUpdate, type PrepareShadow, type Rollback, type Switchover } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";

/** A handler's answer; the journal turns it into the CommandResult sent back. */
export interface CommandOutcome {
  status: CommandStatus;
  message: string;
  /** PrepareShadow: the shadow container it created (not started). */
  shadowContainerId?: string;
  /** Switchover and Rollback: the record as it stands when the command returns. */
  switchover?: SwitchoverRecord;
}

/** One method per action; `id` is the command's id, for the handler's own logs and state. */
export interface CommandHandler {
  prepareShadow(action: PrepareShadow, id: string): Promise<CommandOutcome>;
  switchover(action: Switchover, id: string): Promise<CommandOutcome>;
  rollback(action: Rollback, id: string): Promise<CommandOutcome>;
}

/**
 * ModelUpdate: validate the artifact, store it in the model directory and hot-load it, answering
 * OK (loaded) or REJECTED (the model in use stays). The anomaly scorer's, whatever the handler above.
 */
export type ModelUpdateHandler = (action: ModelUpdate, id: string) => Promise<CommandOutcome>;

/** The action names, as the proto's oneof cases spell them. */
export type ActionName = keyof CommandHandler;

/** The answer for an action this agent does not perform. */
export function unimplemented(action: string | undefined): CommandOutcome {
  return { status: CommandStatus.UNIMPLEMENTED, message: `this agent cannot perform ${action ?? "an empty command"} yet` };
}

/** Today's handlers: every action is answered UNIMPLEMENTED (the rebuild and switchover work fills them in). */
export const unimplementedHandler: CommandHandler = {
  prepareShadow: () => Promise.resolve(unimplemented("prepareShadow")),
  switchover: () => Promise.resolve(unimplemented("switchover")),
  rollback: () => Promise.resolve(unimplemented("rollback")),
};
