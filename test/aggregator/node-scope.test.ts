/**
 * Node scope over real mTLS with two agent certificates: node A's agent tries to delete, take
 * over, fake a detection on and fill the windows of node B's container, and to end B's spool
 * sequence; each write is refused and counted, A's stream goes on, and B's data is intact. Also:
 * a container that moved (deleted by A, then reported by B) is fine, and a store from before
 * per-node spool sequences is moved without trusting its old records.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Level } from "level";
import { AgentMessageSchema, AgentService, type AgentMessage, type AggregatorMessage } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { StoredWindowSchema } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { TelemetryItemSchema, WindowSummarySchema, type WindowBatch } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { callBidi, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { keys } from "../../aggregator/store/keys.js";
import { TelemetryStore } from "../../aggregator/store/telemetry-store.js";

type Body = Exclude<MessageInitShape<typeof AgentMessageSchema>["body"], undefined>;

/** One agent's raw stream: each write resolves when the aggregator acks it. */
interface AgentStream {
  send(body: Body): Promise<void>;
  close(): void;
}

const id = (c: string) => c.repeat(64 / c.length);

function graph(containerId: string, node: string): LayerGraph {
  return create(LayerGraphSchema, {
    containerId,
    containerName: `app-${containerId.slice(0, 4)}`,
    node,
    state: "running",
    image: "example/app:1",
    imageId: `sha256:${"e".repeat(64)}`,
    layers: [
      { layerId: `sha256:${"a".repeat(64)}`, name: "base", kind: LayerKind.IMAGE, index: 0 },
      { layerId: `rw:${containerId}`, name: "rw", kind: LayerKind.WRITABLE, dependencies: [`sha256:${"a".repeat(64)}`] },
    ],
  });
}

const windows = (spoolId: string, spoolSeq: bigint, node: string, containerId: string): Body => ({
  case: "telemetry",
  value: create(TelemetryItemSchema, { spoolId, spoolSeq, body: { case: "windows", value: { windows: [create(WindowSummarySchema, { node, containerId, ticks: 7 })] } } }),
});

const detection = (spoolId: string, spoolSeq: bigint, node: string, containerId: string): Body => ({
  case: "telemetry",
  value: create(TelemetryItemSchema, {
    spoolId,
    spoolSeq,
    body: { case: "detection", value: { id: `d-${spoolSeq}`, node, containerId, layerId: `rw:${containerId}`, rule: "drift", reason: "added", path: "/tmp/x", at: timestampFromDate(new Date()) } },
  }),
});

describe("node scope on agent writes (two agents over mTLS)", () => {
  let dir: string;
  let agg: RunningAggregator;
  const streams: AgentStream[] = [];
  const clients: grpc.Client[] = [];

  const connect = async (node: string): Promise<AgentStream> => {
    const c = makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(join(dir, "tls"), { role: "agent", node })));
    clients.push(c);
    const call = callBidi(c, AgentService.method.connect);
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
    streams.push(s);
    await s.send({ case: "hello", value: { node, agentVersion: "test" } });
    return s;
  };

  const refusals = async (kind: string) => {
    const m = agg.metrics.registry.getSingleMetric("shadowlayer_aggregator_refused_writes_total");
    return (await m?.get())?.values.find((v) => v.labels.kind === kind)?.value ?? 0;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-scope-"));
    await initCerts(join(dir, "tls"), { nodes: ["node-a", "node-b"] });
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(join(dir, "tls"), { role: "aggregator" }), log: silentLogger() });
  });
  after(async () => {
    for (const s of streams) s.close();
    for (const c of clients) c.close();
    await agg.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses A's delete and take-over of B's container, counts them, and keeps A's stream", async () => {
    const a = await connect("node-a");
    const b = await connect("node-b");
    const victim = id("b1");
    await b.send({ case: "graphUpsert", value: { graph: graph(victim, "node-b") } });
    await a.send({ case: "graphDelete", value: { containerId: victim } });
    assert.equal(agg.store.get(victim)?.node, "node-b", "the delete did not remove B's container");
    await a.send({ case: "graphUpsert", value: { graph: graph(victim, "node-a") } });
    assert.equal(agg.store.get(victim)?.node, "node-b", "the upsert did not take it over");
    assert.equal(await refusals("graphDelete"), 1);
    assert.equal(await refusals("graphUpsert"), 1);
    // A's stream was not ended: its own writes still land.
    await a.send({ case: "graphUpsert", value: { graph: graph(id("a1"), "node-a") } });
    assert.equal(agg.store.get(id("a1"))?.node, "node-a");
    await a.send({ case: "syncComplete", value: { containerIds: [id("a1"), victim] } });
    assert.equal(agg.store.get(victim)?.node, "node-b", "A's sync naming B's container changes nothing");
  });

  it("lets a container move: deleted by A, then reported by B", async () => {
    const a = await connect("node-a");
    const b = await connect("node-b");
    const moving = id("c2");
    await a.send({ case: "graphUpsert", value: { graph: graph(moving, "node-a") } });
    await a.send({ case: "graphDelete", value: { containerId: moving } });
    await b.send({ case: "graphUpsert", value: { graph: graph(moving, "node-b") } });
    assert.equal(agg.store.get(moving)?.node, "node-b");
    await a.send(windows("spool-a-move", 1n, "node-a", moving));
    assert.deepEqual(await agg.telemetry.windows({ node: "node-a", containerId: moving }, 10), [], "A's late window about it is refused now that B has it");
  });

  it("refuses A's detection on B's container: B's risk stays where it was", async () => {
    const a = await connect("node-a");
    const b = await connect("node-b");
    const victim = id("d3");
    await b.send({ case: "graphUpsert", value: { graph: graph(victim, "node-b") } });
    const before = agg.scores.recompute(victim)?.risk;
    assert.equal(before, 0);
    await a.send(detection("spool-a-det", 1n, "node-a", victim));
    assert.equal(agg.scores.recompute(victim)?.risk, 0, "no drift from a detection B never made");
    assert.deepEqual(await agg.telemetry.detections({ containerId: victim }, 10), []);
    assert.equal(await refusals("detection"), 1);
    // The same detection from B counts (the check above could fail).
    await b.send(detection("spool-b-det", 1n, "node-b", victim));
    assert.equal(agg.scores.recompute(victim)?.risk, 80);
  });

  it("refuses A's windows about B's container and about containers nobody reported, keeping A's own", async () => {
    const a = await connect("node-a");
    const b = await connect("node-b");
    const victim = id("e4");
    const own = id("a4");
    const refusedBefore = await refusals("window");
    await b.send({ case: "graphUpsert", value: { graph: graph(victim, "node-b") } });
    await a.send({ case: "graphUpsert", value: { graph: graph(own, "node-a") } });
    await a.send({
      case: "telemetry",
      value: create(TelemetryItemSchema, {
        spoolId: "spool-a-win",
        spoolSeq: 1n,
        body: { case: "windows", value: { windows: [victim, id("f4"), own].map((containerId) => create(WindowSummarySchema, { node: "node-a", containerId, ticks: 666 })) } },
      }),
    });
    assert.equal(agg.telemetry.latestWindows().find((w) => w.containerId === victim), undefined, "B's latest window is not A's");
    assert.deepEqual((await agg.telemetry.windows({ node: "node-a" }, 100)).map((s) => s.window?.containerId), [own]);
    assert.equal((await refusals("window")) - refusedBefore, 2);
  });

  it("keeps spool sequences per node: A's seq 2^64-1 under B's spool id leaves B's items stored", async () => {
    const a = await connect("node-a");
    const b = await connect("node-b");
    const theirs = id("b5");
    const own = id("a5");
    await b.send({ case: "graphUpsert", value: { graph: graph(theirs, "node-b") } });
    await a.send({ case: "graphUpsert", value: { graph: graph(own, "node-a") } });
    await b.send(windows("spool-b", 1n, "node-b", theirs));
    await a.send(windows("spool-b", 2n ** 64n - 1n, "node-a", own));
    await b.send(windows("spool-b", 2n, "node-b", theirs));
    await b.send(windows("spool-b", 3n, "node-b", theirs));
    const stored = await agg.telemetry.windows({ node: "node-b", containerId: theirs }, 10);
    assert.deepEqual(stored.map((s) => s.spoolSeq), [1n, 2n, 3n]);
    // And repeats are still dropped, per node.
    await b.send(windows("spool-b", 3n, "node-b", theirs));
    assert.equal((await agg.telemetry.windows({ node: "node-b", containerId: theirs }, 10)).length, 3);
  });
});

describe("spool sequences from before they were per node", () => {
  it("are read back from what each node stored, not from the old record", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sl-scope-mig-"));
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" });
    await db.open();
    try {
      // An old store: node-b stored seqs 1 and 2 of spool "sp", and another node then pushed the
      // spool's one record to the end.
      const item = (seq: bigint, node = "node-b") =>
        create(TelemetryItemSchema, { spoolId: "sp", spoolSeq: seq, body: { case: "windows", value: { windows: [create(WindowSummarySchema, { node, containerId: id("9") })] } } });
      for (const seq of [1n, 2n]) {
        const window = item(seq).body.value as WindowBatch;
        await db.put(keys.window("node-b", "sp", seq, 0), toBinary(StoredWindowSchema, create(StoredWindowSchema, { spoolId: "sp", spoolSeq: seq, window: window.windows[0], index: 0 })));
      }
      await db.put(keys.spoolSeq("sp"), new TextEncoder().encode((2n ** 64n - 1n).toString()));
      const after = await TelemetryStore.open(db);
      assert.deepEqual(await db.keys(keys.spoolSeqRange).all(), [], "the old records are gone");
      assert.equal(await after.put("node-b", item(2n)), false, "what node-b stored is still a repeat");
      assert.equal(await after.put("node-b", item(3n)), true, "its next item is stored");
      assert.equal(await after.put("node-a", item(1n, "node-a")), true, "another node's sequence starts fresh");
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
