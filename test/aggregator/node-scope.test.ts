/**
 * Node scope over real mTLS with two agent certificates: node A's agent tries to delete, take
 * over, fake a detection on and fill the windows of node B's container, to end B's spool
 * sequence and to replace B's inventory of an image; each write is refused (or, for the
 * inventory, kept apart and the disagreement shown), A's stream goes on, and B's data is intact.
 * Also: a container that moved (deleted by A, then reported by B) is fine, and a store from
 * before per-node spool sequences is moved without trusting its old records.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { StoredWindowSchema } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { ImageInventorySchema, PackageSchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { TelemetryItemSchema, WindowSummarySchema, type WindowBatch } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { keys } from "../../aggregator/store/keys.js";
import { withTempLevel } from "../harness/temp-level.js";
import { connectAgent, type AgentBody as Body, type AgentStream } from "../harness/agent-stream.js";
import { testGraph as graph } from "../harness/test-graphs.js";
import { TelemetryStore } from "../../aggregator/store/telemetry-store.js";

const id = (c: string) => c.repeat(64 / c.length);

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
    const s = await connectAgent(c, node);
    streams.push(s);
    return s;
  };

  const pair = async () => ({ a: await connect("node-a"), b: await connect("node-b") });
  const upsert = (s: AgentStream, containerId: string, node: string) => s.send({ case: "graphUpsert", value: { graph: graph(containerId, node) } });

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
    const { a, b } = await pair();
    const victim = id("b1");
    await upsert(b, victim, "node-b");
    await a.send({ case: "graphDelete", value: { containerId: victim } });
    assert.equal(agg.store.get(victim)?.node, "node-b", "the delete did not remove B's container");
    await upsert(a, victim, "node-a");
    assert.equal(agg.store.get(victim)?.node, "node-b", "the upsert did not take it over");
    assert.equal(await refusals("graphDelete"), 1);
    assert.equal(await refusals("graphUpsert"), 1);
    // A's stream was not ended: its own writes still land.
    await upsert(a, id("a1"), "node-a");
    assert.equal(agg.store.get(id("a1"))?.node, "node-a");
    await a.send({ case: "syncComplete", value: { containerIds: [id("a1"), victim] } });
    assert.equal(agg.store.get(victim)?.node, "node-b", "A's sync naming B's container changes nothing");
  });

  it("lets a container move: deleted by A, then reported by B", async () => {
    const { a, b } = await pair();
    const moving = id("c2");
    await upsert(a, moving, "node-a");
    await a.send({ case: "graphDelete", value: { containerId: moving } });
    await upsert(b, moving, "node-b");
    assert.equal(agg.store.get(moving)?.node, "node-b");
    await a.send(windows("spool-a-move", 1n, "node-a", moving));
    assert.deepEqual(await agg.telemetry.windows({ node: "node-a", containerId: moving }, 10), [], "A's late window about it is refused now that B has it");
  });

  it("refuses A's detection on B's container: B's risk stays where it was", async () => {
    const { a, b } = await pair();
    const victim = id("d3");
    await upsert(b, victim, "node-b");
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
    const { a, b } = await pair();
    const victim = id("e4");
    const own = id("a4");
    const refusedBefore = await refusals("window");
    await upsert(b, victim, "node-b");
    await upsert(a, own, "node-a");
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
    const { a, b } = await pair();
    const theirs = id("b5");
    const own = id("a5");
    await upsert(b, theirs, "node-b");
    await upsert(a, own, "node-a");
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

  it("keeps B's inventory of an image when A reports fewer packages for it, and says they disagree", async () => {
    const { a, b } = await pair();
    const image = `sha256:${"7".repeat(64)}`;
    const victim = id("b6");
    const pkg = (name: string, version: string) => create(PackageSchema, { type: "deb", name, version, path: "/var/lib/dpkg/status", layerId: `sha256:${"a".repeat(64)}` });
    await b.send({ case: "graphUpsert", value: { graph: graph(victim, "node-b", { imageId: image }) } });
    await b.send({ case: "inventory", value: create(ImageInventorySchema, { imageId: image, packages: [pkg("libc6", "2.36-9"), pkg("openssl", "3.0.2-1")] }) });
    assert.equal(agg.scores.get(victim)?.caveats.some((c) => /disagree/.test(c)), false, "one node: nothing to disagree about");
    const inflated = create(ImageInventorySchema, { imageId: image, packages: [pkg("libc6", "2.36-9"), pkg("evil", "1.0")] });
    await a.send({ case: "inventory", value: inflated });
    assert.deepEqual(agg.scores.inventory(image)?.packages.map((p) => p.name), ["libc6", "openssl"], "A runs no container of it: its report is not stored");
    assert.equal(await refusals("inventory"), 1);
    // A running the image too: its report is kept beside B's, never in its place.
    await a.send({ case: "graphUpsert", value: { graph: graph(id("a6"), "node-a", { imageId: image }) } });
    await a.send({ case: "inventory", value: create(ImageInventorySchema, { imageId: image, packages: [pkg("libc6", "2.36-9")] }) });
    assert.deepEqual(agg.scores.inventory(image)?.packages.map((p) => p.name), ["libc6", "openssl"], "openssl is still matched");
    const caveat = agg.scores.get(victim)?.caveats.find((c) => /disagree/.test(c));
    assert.equal(caveat, "nodes disagree about this image's inventory (node node-a: 1 packages, node node-b: 2 packages); matched against all 2 they reported");
    // A's report again with B's packages: they agree, the caveat goes.
    await a.send({ case: "inventory", value: create(ImageInventorySchema, { imageId: image, packages: [pkg("openssl", "3.0.2-1"), pkg("libc6", "2.36-9")] }) });
    assert.equal(agg.scores.get(victim)?.caveats.some((c) => /disagree/.test(c)), false);
  });
});

describe("spool sequences from before they were per node", () => {
  it("are read back from what each node stored, not from the old record", async () => {
    await withTempLevel(async (db) => {
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
    });
  });
});
