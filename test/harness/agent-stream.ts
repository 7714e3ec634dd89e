/**
 * A raw agent stream for aggregator tests: Hello sent, each write resolving when the aggregator
 * acks it (rejecting once the stream failed), so a test can send exactly what an agent might.
 */
import type * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AgentMessageSchema, AgentService, type AgentMessage, type AggregatorMessage } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { TlsMaterial } from "../../common/certs.js";
import { callBidi, channelCredentials, makeClient } from "../../common/grpc.js";

export type AgentBody = Exclude<MessageInitShape<typeof AgentMessageSchema>["body"], undefined>;

export interface AgentStream {
  send(body: AgentBody): Promise<void>;
  /** Cancels the stream and closes its client. */
  close(): void;
}

export async function openAgentStream(address: string, tls: TlsMaterial, node: string): Promise<AgentStream> {
  const client = makeClient(AgentService, address, channelCredentials(tls));
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
    close: () => {
      call.cancel();
      client.close();
    },
  };
  await s.send({ case: "hello", value: { node, agentVersion: "test" } });
  return s;
}
