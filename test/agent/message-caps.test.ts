/**
 * The caps on what a container controls in the agent's messages: a graph at every cap at once
 * still fits in one message, what is cut is flagged, the collector's own objects are left as
 * they are, and chunks of an inventory put back together give the inventory.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { AgentMessageSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { TelemetryItemSchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { ImageInventorySchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { SwitchoverRecordSchema } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { inventoryChunks, INVENTORY_CHUNK_BYTES } from "../../agent/link/inventory-chunks.js";
import { ANNOTATION_BYTES, ARGV_BYTES, capMessage, MAX_ANNOTATIONS, MAX_LABELS, MAX_PROCESSES, MAX_RECORD_STEPS, MESSAGE_LIMIT_BYTES, NAME_BYTES, PATH_BYTES, TEXT_BYTES } from "../../agent/link/message-caps.js";
import { InventoryAssembly } from "../../aggregator/ingest/inventory-assembly.js";

/** Flat strings, shared (as bytes read from /proc are flat; a repeat() rope costs its flattening to whoever reads it first). */
const flat = new Map<string, string>();
const big = (n: number, c = "x") => {
  let f = flat.get(c);
  if (f === undefined || f.length < n) flat.set(c, (f = Buffer.alloc(Math.max(n, 1_000_000), c).toString()));
  return f.slice(0, n);
};

/** A hostile container: 127 image layers with 1 MB history steps, 1,016 processes with 1 MB argv, 1,000 labels. */
function hostileGraph(): LayerGraph {
  const argv = Array.from({ length: 10 }, (_, i) => big(100_000, String(i)));
  return create(LayerGraphSchema, {
    containerId: "f".repeat(64),
    containerName: big(100_000),
    node: "n",
    image: big(100_000),
    labels: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`${i}${big(10_000)}`, big(100_000)])),
    // A pod's author controls its name, labels and annotations (kubectl's last-applied-configuration is a whole document).
    pod: big(100_000),
    namespace: big(100_000),
    podUid: big(100_000),
    podLabels: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`${i}${big(10_000)}`, big(100_000)])),
    podAnnotations: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`${i}${big(10_000)}`, big(300_000)])),
    layers: Array.from({ length: 127 }, (_, i) => ({
      layerId: `sha256:${i.toString(16).padStart(64, "0")}`,
      name: big(1_000_000),
      createdBy: big(1_000_000),
      kind: LayerKind.IMAGE,
      services: Array.from({ length: 40 }, () => big(10_000)),
      processes: Array.from({ length: 8 }, (_, p) => ({ pid: i * 100 + p, name: big(10_000), exe: big(100_000), argv, drift: p === 0 })),
    })),
  });
}

describe("message caps", () => {
  it("fits a graph at every cap in one message, flags what was cut and leaves the original alone", () => {
    const g = hostileGraph();
    const { message, truncated } = capMessage(create(AgentMessageSchema, { seq: 1n, body: { case: "graphUpsert", value: { graph: g } } }));
    assert.equal(truncated, true);
    const bytes = toBinary(AgentMessageSchema, message).length;
    assert.ok(bytes < MESSAGE_LIMIT_BYTES * 0.9, `${bytes} bytes`);
    assert.equal(g.containerName.length, 100_000, "the collector's graph is not changed");
    assert.equal(g.layers[0]?.processes.length, 8);
    assert.equal(g.layers[0]?.processes[0]?.argv.length, 10);
    assert.equal(g.layers[0]?.processes[0]?.truncated, false);
    const out = message.body.case === "graphUpsert" ? message.body.value.graph : undefined;
    assert.equal(out?.truncated, true);
    const procs = out?.layers.flatMap((l) => l.processes) ?? [];
    assert.equal(procs.length, MAX_PROCESSES);
    assert.equal(procs.filter((p) => p.drift).length, 127, "drift processes are kept first");
    for (const p of procs) {
      assert.equal(p.truncated, true);
      assert.ok(p.argv.reduce((n, a) => n + Buffer.byteLength(a) + 2, 0) <= ARGV_BYTES);
      assert.ok(Buffer.byteLength(p.exe) <= PATH_BYTES);
    }
    assert.equal(Object.keys(out?.labels ?? {}).length, MAX_LABELS);
    assert.ok(Buffer.byteLength(out?.containerName ?? "") <= NAME_BYTES);
    assert.equal(Object.keys(out?.podLabels ?? {}).length, MAX_LABELS);
    assert.equal(Object.keys(out?.podAnnotations ?? {}).length, MAX_ANNOTATIONS);
    for (const v of Object.values(out?.podAnnotations ?? {})) assert.ok(Buffer.byteLength(v) <= ANNOTATION_BYTES);
    for (const f of [out?.pod, out?.namespace, out?.podUid]) assert.ok(Buffer.byteLength(f ?? "") <= NAME_BYTES);
  });

  it("cuts a pod's annotations alone (a graph otherwise within the caps)", () => {
    const graph = create(LayerGraphSchema, { containerId: "a".repeat(64), pod: "web", namespace: "prod", podAnnotations: { "kubectl.kubernetes.io/last-applied-configuration": big(200_000) } });
    const r = capMessage(create(AgentMessageSchema, { seq: 1n, body: { case: "graphUpsert", value: { graph } } }));
    const out = r.message.body.case === "graphUpsert" ? r.message.body.value.graph : undefined;
    assert.equal(r.truncated, true);
    assert.equal(out?.truncated, true);
    assert.equal(Buffer.byteLength(out?.podAnnotations["kubectl.kubernetes.io/last-applied-configuration"] ?? ""), ANNOTATION_BYTES);
    assert.equal(out?.namespace, "prod");
  });

  it("sends a graph within the caps as it is", () => {
    const graph = create(LayerGraphSchema, { containerId: "a".repeat(64), containerName: "web", layers: [{ layerId: "x", processes: [{ pid: 1, argv: ["sh", "-c", "sleep 1"] }] }] });
    const m = create(AgentMessageSchema, { seq: 1n, body: { case: "graphUpsert", value: { graph } } });
    const r = capMessage(m);
    assert.equal(r.truncated, false);
    assert.equal(r.message, m);
  });

  it("cuts on a character boundary and flags a detection's path", () => {
    const path = `/tmp/${"é".repeat(PATH_BYTES)}`;
    const m = create(AgentMessageSchema, { body: { case: "telemetry", value: create(TelemetryItemSchema, { body: { case: "detection", value: { path, comm: "x" } } }) } });
    const r = capMessage(m);
    const d = r.message.body.case === "telemetry" && r.message.body.value.body.case === "detection" ? r.message.body.value.body.value : undefined;
    assert.equal(d?.truncated, true);
    assert.ok(Buffer.byteLength(d?.path ?? "") <= PATH_BYTES);
    assert.ok(!(d?.path ?? "").includes("\ufffd"), "no broken character at the cut");
    assert.ok(path.startsWith(d?.path ?? "?"));
  });

  it("cuts a switchover record's reason, error and steps (they quote containers and probes), alone and in a command result", () => {
    const huge = "x".repeat(MESSAGE_LIMIT_BYTES);
    const r = create(SwitchoverRecordSchema, { id: "so-1", reason: huge, error: huge, steps: Array.from({ length: 1000 }, (_, i) => ({ name: `s${i}`, state: "done", message: huge.slice(0, 5000) })) });
    for (const m of [create(AgentMessageSchema, { seq: 1n, body: { case: "switchover", value: r } }), create(AgentMessageSchema, { seq: 2n, body: { case: "commandResult", value: { commandId: "so-1", switchover: r } } })]) {
      const { message, truncated } = capMessage(m);
      assert.equal(truncated, true);
      const got = message.body.case === "switchover" ? message.body.value : message.body.case === "commandResult" ? message.body.value.switchover : undefined;
      assert.ok(got !== undefined);
      assert.equal(got.reason.length, TEXT_BYTES);
      assert.equal(got.steps.length, MAX_RECORD_STEPS);
      assert.equal(got.steps[MAX_RECORD_STEPS - 1]?.name, "s999", "the last step is kept");
      assert.ok(toBinary(AgentMessageSchema, message).length < 300_000);
    }
    assert.equal(r.reason.length, MESSAGE_LIMIT_BYTES, "the original is left alone");
    const small = create(AgentMessageSchema, { seq: 3n, body: { case: "switchover", value: create(SwitchoverRecordSchema, { id: "so-2", reason: "fine" }) } });
    assert.equal(capMessage(small).message, small);
  });

  it("chunks an inventory that the aggregator's assembly puts back together", () => {
    const inv = create(ImageInventorySchema, {
      imageId: `sha256:${"e".repeat(64)}`,
      layerIds: ["l"],
      packages: Array.from({ length: 6_000 }, (_, i) => ({ type: "deb", name: `p${i}`, version: `${i}.${"1".repeat(300)}`, layerId: "l" })),
      partial: Array.from({ length: 2_000 }, (_, i) => ({ layerId: "l", path: `x/${i}`, reason: "r".repeat(300) })),
    });
    const chunks = inventoryChunks(inv);
    assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
    for (const c of chunks) assert.ok(toBinary(ImageInventorySchema, c).length <= INVENTORY_CHUNK_BYTES);
    const a = new InventoryAssembly();
    const outcomes = chunks.map((c) => a.add(c));
    assert.ok(outcomes.slice(0, -1).every((o) => "pending" in o));
    const last = outcomes.at(-1);
    const whole = last !== undefined && "whole" in last ? last.whole : undefined;
    assert.equal(whole?.packages.map((p) => p.version).join(), inv.packages.map((p) => p.version).join());
    assert.equal(whole?.partial.map((p) => p.path).join(), inv.partial.map((p) => p.path).join());
    assert.equal(whole?.chunkCount, 0);
    a.abandon();
    assert.deepEqual(inventoryChunks(create(ImageInventorySchema, { imageId: "x", packages: [{ name: "one" }] })).length, 1);
  });
});
