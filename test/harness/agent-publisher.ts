/**
 * A test agent on a raw AgentService stream that publishes a batch of messages back to back (as an
 * agent's sync does) and resolves once the aggregator acked the last of them: thousands of graph
 * upserts cost one round trip, not one each.
 */
import type * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AgentMessageSchema, AgentService, type AgentMessage, type AggregatorMessage } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind, type LayerGraph, type LayerSchema } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { callBidi } from "../../common/grpc.js";

export type AgentBody = Exclude<MessageInitShape<typeof AgentMessageSchema>["body"], undefined>;

export interface Publisher {
  /** Writes every body in order; resolves when the last one is acked. */
  publish(bodies: readonly AgentBody[]): Promise<void>;
  close(): void;
}

/** Opens a stream on `client` (an AgentService client) and says hello as `node`. */
export async function openPublisher(client: grpc.Client, node: string): Promise<Publisher> {
  const call = callBidi(client, AgentService.method.connect);
  let seq = 0n;
  let acked = 0n;
  let failure: Error | undefined;
  const waiting: Array<{ upTo: bigint; done: (err?: Error) => void }> = [];
  const settle = () => {
    for (const w of waiting.filter((x) => failure !== undefined || x.upTo <= acked)) {
      waiting.splice(waiting.indexOf(w), 1);
      w.done(failure);
    }
  };
  call.on("data", (m: AggregatorMessage) => {
    if (m.body.case !== "ack") return;
    if (m.body.value.seq > acked) acked = m.body.value.seq;
    settle();
  });
  call.on("error", (err: Error) => {
    failure = err;
    settle();
  });
  const p: Publisher = {
    publish: (bodies) =>
      new Promise((resolve, reject) => {
        if (failure !== undefined) return reject(failure);
        for (const body of bodies) call.write(create(AgentMessageSchema, { seq: ++seq, body }) as AgentMessage);
        waiting.push({ upTo: seq, done: (err) => (err === undefined ? resolve() : reject(err)) });
        settle();
      }),
    close: () => call.cancel(),
  };
  await p.publish([{ case: "hello", value: { node, agentVersion: "test" } }]);
  return p;
}

/** A 64-hex container id, distinct per (`group`, `n`). */
export function containerIdOf(n: number, group = 0): string {
  return `${group.toString(16).padStart(4, "0")}${n.toString(16).padStart(60, "0")}`;
}

/** A small two-layer graph of `node`; `extra` sets other fields (a long image name, a big created_by). */
export function testGraph(containerId: string, node: string, extra: { containerName?: string; image?: string; imageId?: string; state?: string; layers?: Array<MessageInitShape<typeof LayerSchema>> } = {}): LayerGraph {
  return create(LayerGraphSchema, {
    containerId,
    containerName: `app-${containerId.slice(-8)}`,
    node,
    state: "running",
    image: "example/app:1",
    imageId: `sha256:${"e".repeat(64)}`,
    layers: [
      { layerId: `sha256:${"a".repeat(64)}`, name: "base", kind: LayerKind.IMAGE, index: 0 },
      { layerId: `rw:${containerId}`, name: "rw", kind: LayerKind.WRITABLE, dependencies: [`sha256:${"a".repeat(64)}`] },
    ],
    ...extra,
  });
}

export const upsertOf = (g: LayerGraph): AgentBody => ({ case: "graphUpsert", value: { graph: g } });
