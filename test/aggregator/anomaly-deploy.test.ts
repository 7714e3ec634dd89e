/**
 * AdminService.DeployModel over real mTLS: a model trained by the model library goes as a
 * ModelUpdate command only to the connected agents running its image (test agents on the real
 * stream), each node's answer comes back (loaded, rejected with the agent's reason, unreachable
 * for a node whose agent is gone); the generic model goes to every known node; a corrupt artifact
 * reaches no agent; only an admin certificate may deploy.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { AgentService, CommandStatus, type Command } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AdminService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { loadTls } from "../../common/certs.js";
import { callUnary } from "../../common/grpc.js";
import { initBackend } from "../../models/backend.js";
import { serializeArtifact } from "../../models/artifact.js";
import { trainModel } from "../../models/train.js";
import { FEATURE_COUNT } from "../../models/features.js";
import type { ModelInput, ModelScope } from "../../models/types.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { startMtlsAggregator, type MtlsAggregator } from "./mtls-aggregator.js";

const IMAGE = `sha256:${"1".repeat(64)}`;
const OTHER = `sha256:${"2".repeat(64)}`;
const NODES = ["dep-a", "dep-b", "dep-c", "dep-d"];

/** Baseline-like inputs: a steady layer with small noise (deterministic). */
function inputs(n: number): ModelInput[] {
  let x = 42;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  return Array.from({ length: n }, () => ({ vector: Array.from({ length: FEATURE_COUNT }, (_, k) => (k % 7) + rnd() * 0.1), seconds: 10 }));
}

async function artifact(scope: ModelScope): Promise<Uint8Array> {
  const m = await trainModel(inputs(240), { scope, epochs: 3, seed: 7 });
  try {
    return new TextEncoder().encode(serializeArtifact(m.toArtifact()));
  } finally {
    m.dispose();
  }
}

describe("DeployModel (mTLS, test agents)", () => {
  let m: MtlsAggregator;
  let admin: grpc.Client;
  let reader: grpc.Client;
  const agents = new Map<string, AgentStream>();
  let imageModel: Uint8Array;
  let genericModel: Uint8Array;
  const updates = (node: string): Command[] => (agents.get(node)?.commands ?? []).filter((c) => c.action.case === "modelUpdate");

  before(async () => {
    await initBackend("auto");
    [imageModel, genericModel] = [await artifact({ kind: "image", imageId: IMAGE }), await artifact({ kind: "generic" })];
    m = await startMtlsAggregator({ nodes: NODES });
    admin = m.client(AdminService, await loadTls(m.tlsDir, { role: "admin" }));
    reader = m.client(AdminService, await loadTls(m.tlsDir, { role: "reader" }));
    for (const [i, node] of NODES.entries()) {
      const a = await connectAgent(m.client(AgentService, await loadTls(m.tlsDir, { role: "agent", node })), node);
      agents.set(node, a);
      // dep-a, dep-b and dep-d run the image; dep-c another one.
      await publish(a, [upsertOf(testGraph(containerIdOf(i, 0xde), node, { imageId: node === "dep-c" ? OTHER : IMAGE })), { case: "syncComplete", value: { containerIds: [containerIdOf(i, 0xde)] } }]);
    }
    (agents.get("dep-a") as AgentStream).answer = () => ({ status: CommandStatus.OK, message: "loaded, hot-swapped" });
    (agents.get("dep-b") as AgentStream).answer = () => ({ status: CommandStatus.REJECTED, message: "feature version layer-window-v1 is not this agent's layer-window-v2" });
    (agents.get("dep-c") as AgentStream).answer = () => ({ status: CommandStatus.OK, message: "loaded" });
    // dep-d's agent goes away: its container stays known.
    agents.get("dep-d")?.close();
    await waitFor("dep-d disconnected", () => (m.agg.ingest.connectedNodes().includes("dep-d") ? undefined : true));
  });
  after(async () => {
    for (const a of agents.values()) a.close();
    await m.stop();
  });

  it("sends the model to the agents running its image only, and answers per node", async () => {
    const r = await callUnary(admin, AdminService.method.deployModel, { artifact: imageModel });
    assert.equal(r.imageId, IMAGE);
    assert.match(r.version, /^\d{4}-\d{2}-\d{2}T.*-[0-9a-f]{8}$/);
    assert.deepEqual(
      r.deployments.map((d) => [d.node, d.outcome]),
      [
        ["dep-a", "loaded"],
        ["dep-b", "rejected"],
        ["dep-d", "unreachable"],
      ],
    );
    assert.match(r.deployments[1]?.message ?? "", /feature version/);
    assert.equal(updates("dep-c").length, 0, "not a node of the image");
    const sent = updates("dep-a")[0];
    assert.equal(sent?.action.case, "modelUpdate");
    if (sent?.action.case === "modelUpdate") {
      assert.equal(sent.action.value.imageId, IMAGE);
      assert.equal(sent.action.value.version, r.version);
      assert.ok(Buffer.from(sent.action.value.artifact).equals(Buffer.from(imageModel)), "the artifact as trained");
    }
  });

  it("one node with --node; the generic model to every known node", async () => {
    const one = await callUnary(admin, AdminService.method.deployModel, { artifact: imageModel, node: "dep-a" });
    assert.deepEqual(one.deployments.map((d) => d.node), ["dep-a"]);
    await assert.rejects(callUnary(admin, AdminService.method.deployModel, { artifact: imageModel, node: "dep-c" }), (e: grpc.ServiceError) => e.code === grpc.status.FAILED_PRECONDITION && /runs no container of image/.test(e.details));
    const g = await callUnary(admin, AdminService.method.deployModel, { artifact: genericModel });
    assert.equal(g.imageId, "");
    assert.deepEqual(
      g.deployments.map((d) => [d.node, d.outcome]),
      [
        ["dep-a", "loaded"],
        ["dep-b", "rejected"],
        ["dep-c", "loaded"],
        ["dep-d", "unreachable"],
      ],
    );
    const sent = updates("dep-c")[0];
    assert.ok(sent?.action.case === "modelUpdate" && sent.action.value.imageId === "");
  });

  it("refuses a corrupt artifact before any agent sees it, and a reader", async () => {
    const before = NODES.map((n) => updates(n).length);
    const corrupt = imageModel.slice(0, imageModel.length - 40);
    await assert.rejects(callUnary(admin, AdminService.method.deployModel, { artifact: corrupt }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /^artifact refused: /.test(e.details));
    await assert.rejects(callUnary(admin, AdminService.method.deployModel, {}), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /artifact is required/.test(e.details));
    await assert.rejects(callUnary(reader, AdminService.method.deployModel, { artifact: imageModel }), (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED && /needs an admin certificate/.test(e.details));
    assert.deepEqual(NODES.map((n) => updates(n).length), before);
  });
});
