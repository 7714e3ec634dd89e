/**
 * One agent's raw AgentService.Connect stream, for tests that play an agent: each message
 * resolves when the aggregator acks it and rejects when the stream ends first.
 */
import type * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AgentMessageSchema, AgentService, type AgentMessage, type AggregatorMessage } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { callBidi } from "../../common/grpc.js";

export type AgentBody = Exclude<MessageInitShape<typeof AgentMessageSchema>["body"], undefined>;

export interface AgentStream {
  send(body: AgentBody): Promise<void>;
  close(): void;
}

/** Opens a stream on `client` (an AgentService client) and says hello as `node`. */
export async function connectAgent(client: grpc.Client, node: string): Promise<AgentStream> {
  const call = callBidi(client, AgentService.method.connect);
  let seq = 0n;
  let failure: Error | undefined;
  const waiting = new Map<bigint, { resolve: () => void; reject: (e: Error) => void }>();
  call.on("data", (m: AggregatorMessage) => {
    if (m.body.case !== "ack") return;
    for (const [s, w] of waiting) if (s <= m.body.value.seq) (waiting.delete(s), w.resolve());
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
  };
  try {
    await s.send({ case: "hello", value: { node, agentVersion: "test" } });
  } catch (err) {
    s.close();
    throw err;
  }
  return s;
}
