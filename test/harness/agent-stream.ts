/**
 * One agent's raw AgentService.Connect stream, for tests that play an agent: each message
 * resolves when the aggregator acks it and rejects when the stream ends first. Commands the
 * aggregator sends are kept (`commands`) and answered by `answer` (by default: UNIMPLEMENTED,
 * as an agent without a handler for them answers).
 */
import type * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AgentMessageSchema, AgentService, CommandStatus, type AgentMessage, type AggregatorMessage, type Command, type CommandResultSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { callBidi } from "../../common/grpc.js";

export type AgentBody = Exclude<MessageInitShape<typeof AgentMessageSchema>["body"], undefined>;

/** What the test's agent answers to a command (the command id is filled in). */
export type CommandAnswer = Omit<MessageInitShape<typeof CommandResultSchema>, "commandId" | "$typeName">;

export interface AgentStream {
  send(body: AgentBody): Promise<void>;
  close(): void;
  /** Every command received, in order. */
  readonly commands: Command[];
  /** How the test's agent answers a command; may wait (a slow switchover) before answering. */
  answer: (cmd: Command) => CommandAnswer | Promise<CommandAnswer>;
  /** Resolves with the next command received (or one already received and not yet taken). */
  nextCommand(timeoutMs?: number): Promise<Command>;
}

/** Opens a stream on `client` (an AgentService client) and says hello as `node`. */
export async function connectAgent(client: grpc.Client, node: string): Promise<AgentStream> {
  const call = callBidi(client, AgentService.method.connect);
  let seq = 0n;
  let failure: Error | undefined;
  const waiting = new Map<bigint, { resolve: () => void; reject: (e: Error) => void }>();
  const commandWaiters: Array<(c: Command) => void> = [];
  let taken = 0;
  call.on("data", (m: AggregatorMessage) => {
    if (m.body.case === "command") {
      const cmd = m.body.value;
      s.commands.push(cmd);
      const w = commandWaiters.shift();
      if (w !== undefined) {
        taken++;
        w(cmd);
      }
      void Promise.resolve(s.answer(cmd)).then((a) => s.send({ case: "commandResult", value: { ...(a as Omit<CommandAnswer, "$typeName">), commandId: cmd.id } }).catch(() => undefined));
      return;
    }
    if (m.body.case !== "ack") return;
    for (const [seqNo, w] of waiting) if (seqNo <= m.body.value.seq) (waiting.delete(seqNo), w.resolve());
  });
  call.on("error", (err: grpc.ServiceError) => {
    failure = err;
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  });
  const s: AgentStream = {
    send: (body) =>
      new Promise((resolve, reject) => {
        if (failure !== undefined) return reject(failure);
        seq++;
        waiting.set(seq, { resolve, reject });
        call.write(create(AgentMessageSchema, { seq, body }) as AgentMessage);
      }),
    close: () => call.cancel(),
    commands: [],
    answer: () => ({ status: CommandStatus.UNIMPLEMENTED, message: "the test agent does not perform this command" }),
    nextCommand: (timeoutMs = 15_000) => {
      const ready = s.commands[taken];
      if (ready !== undefined) {
        taken++;
        return Promise.resolve(ready);
      }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no command within ${timeoutMs} ms`)), timeoutMs);
        commandWaiters.push((c) => {
          clearTimeout(t);
          resolve(c);
        });
      });
    },
  };
  try {
    await s.send({ case: "hello", value: { node, agentVersion: "test" } });
  } catch (err) {
    s.close();
    throw err;
  }
  return s;
}
