/**
 * ListWindows by time range over real gRPC and a real level store: 12,000 windows from two nodes
 * (twelve times what a listing without a range holds by default), listed by end time through the
 * time index, page after page over the whole range with no cap, filtered by node and by container (id, prefix,
 * name, also after the container's graph is gone), with tokens that stay good while windows
 * arrive. A store from before the index gets it when it opens.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { QueryService, type StoredWindow } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { TelemetryItemSchema, WindowSummarySchema, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { TelemetryStore } from "../../aggregator/store/telemetry-store.js";
import { keys } from "../../aggregator/store/keys.js";
import { connectAgent, type AgentBody, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";
import { withTempLevel } from "../harness/temp-level.js";
import { encodeFeatures, FEATURE_COUNT, FEATURE_VERSION } from "../../models/features.js";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const STEP_MS = 10_000;
const A = containerIdOf(1, 0xa1);
const B = containerIdOf(2, 0xb2);
const C = containerIdOf(3, 0xc3);
/** Windows per container: A and B on node range-a, C on range-b; 12,000 in all. */
const COUNT = { [A]: 6_000, [B]: 5_000, [C]: 1_000 } as Record<string, number>;
const BATCH = 1000;

function window(node: string, containerId: string, name: string, i: number): WindowSummary {
  // Containers interleave in time: A's i-th window ends at T0 + i*10 s, B's 3 s later, C's 6 s later.
  const offset = containerId === A ? 0 : containerId === B ? 3000 : 6000;
  const end = T0 + i * STEP_MS + offset;
  return create(WindowSummarySchema, {
    node,
    containerId,
    containerName: name,
    start: timestampFromDate(new Date(end - STEP_MS)),
    end: timestampFromDate(new Date(end)),
    ticks: 10,
    featureVersion: FEATURE_VERSION,
    // Only some windows carry a vector: the store's cost is the point here, not the bytes.
    layers: i % 1000 === 0 ? [{ layerId: `sha256:${"a".repeat(64)}`, layerName: "base", featuresF64le: encodeFeatures(new Array<number>(FEATURE_COUNT).fill(i)) }] : [],
  });
}

const endMs = (s: StoredWindow) => (s.window?.end === undefined ? 0 : timestampDate(s.window.end).getTime());

describe("ListWindows by time range (12,000 windows, real level)", () => {
  const dir = tempDir("sl-wrange-");
  let agg: RunningAggregator;
  let client: grpc.Client;
  const agents: AgentStream[] = [];
  const spoolSeq = new Map<string, bigint>();

  const sendWindows = async (agent: AgentStream, node: string, ws: WindowSummary[]) => {
    const bodies: AgentBody[] = [];
    for (let i = 0; i < ws.length; i += BATCH) {
      const seq = (spoolSeq.get(node) ?? 0n) + 1n;
      spoolSeq.set(node, seq);
      bodies.push({ case: "telemetry", value: create(TelemetryItemSchema, { spoolId: `sp-${node}`, spoolSeq: seq, body: { case: "windows", value: { windows: ws.slice(i, i + BATCH) } } }) });
    }
    await publish(agent, bodies);
  };

  const walk = async (req: Record<string, unknown>): Promise<{ windows: StoredWindow[]; pages: number }> => {
    const out: StoredWindow[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await callUnary(client, QueryService.method.listWindows, { ...req, pageToken: token });
      out.push(...page.windows);
      token = page.nextPageToken;
      pages++;
    } while (token !== "" && pages < 10_000);
    return { windows: out, pages };
  };

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    const address = `127.0.0.1:${agg.port}`;
    client = makeClient(QueryService, address, channelCredentials("insecure"));
    const agentClient = makeClient(AgentService, address, channelCredentials("insecure"));
    const a = await connectAgent(agentClient, "range-a");
    const b = await connectAgent(agentClient, "range-b");
    agents.push(a, b);
    await publish(a, [upsertOf(testGraph(A, "range-a", { containerName: "web" })), upsertOf(testGraph(B, "range-a", { containerName: "job" }))]);
    await publish(b, [upsertOf(testGraph(C, "range-b", { containerName: "other" }))]);
    const of = (id: string, node: string, name: string) => Array.from({ length: COUNT[id] ?? 0 }, (_, i) => window(node, id, name, i));
    await sendWindows(a, "range-a", of(A, "range-a", "web"));
    await sendWindows(a, "range-a", of(B, "range-a", "job"));
    await sendWindows(b, "range-b", of(C, "range-b", "other"));
  });
  after(async () => {
    for (const a of agents) a.close();
    client.close();
    await agg.stop();
  });

  it("pages through every window of a range, each once, by end time, with no cap", async () => {
    const { windows, pages } = await walk({ since: timestampFromDate(new Date(T0)), pageSize: 1000 });
    assert.equal(windows.length, 12_000, "the whole range, not the newest `limit`");
    assert.equal(pages, 12);
    const seen = new Set(windows.map((w) => `${w.window?.node}/${w.spoolId}/${w.spoolSeq}/${w.index}`));
    assert.equal(seen.size, windows.length, "no window twice");
    for (let i = 1; i < windows.length; i++) assert.ok(endMs(windows[i - 1] as StoredWindow) <= endMs(windows[i] as StoredWindow), "ordered by end");
    // Without a range the listing is still the newest `limit` (default 1000).
    const plain = await walk({ node: "range-a" });
    assert.equal(plain.windows.length, 1000);
  });

  it("holds [since, until) by window end, with node and container filters", async () => {
    const since = T0 + 1000 * STEP_MS;
    const until = T0 + 2000 * STEP_MS;
    const all = await walk({ since: timestampFromDate(new Date(since)), until: timestampFromDate(new Date(until)), pageSize: 777 });
    // A and B have 1000 windows each ending in the range; all of C's end before it.
    const per = (ws: StoredWindow[], id: string) => ws.filter((w) => w.window?.containerId === id).length;
    assert.equal(per(all.windows, A), 1000);
    assert.equal(per(all.windows, B), 1000);
    assert.equal(per(all.windows, C), 0);
    assert.ok(all.windows.every((w) => endMs(w) >= since && endMs(w) < until));
    const onlyB = await walk({ since: timestampFromDate(new Date(since)), until: timestampFromDate(new Date(until)), container: "job" });
    assert.equal(onlyB.windows.length, 1000);
    assert.ok(onlyB.windows.every((w) => w.window?.containerId === B));
    const byPrefix = await walk({ since: timestampFromDate(new Date(since)), until: timestampFromDate(new Date(until)), container: A.slice(0, 12) });
    assert.equal(per(byPrefix.windows, A), 1000);
    assert.equal(byPrefix.windows.length, 1000);
    const nodeB = await walk({ since: timestampFromDate(new Date(T0)), node: "range-b" });
    assert.equal(nodeB.windows.length, 1000);
    const limited = await walk({ since: timestampFromDate(new Date(since)), limit: 50, pageSize: 20 });
    assert.equal(limited.windows.length, 50, "an explicit limit stops the listing");
    await assert.rejects(callUnary(client, QueryService.method.listWindows, { since: timestampFromDate(new Date(until)), until: timestampFromDate(new Date(since)) }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /must be after/.test(e.details));
  });

  it("keeps its tokens good while windows arrive, and finds a removed container's windows by name", async () => {
    const since = T0 + 5_000 * STEP_MS;
    const req = { since: timestampFromDate(new Date(since)), pageSize: 300 };
    const first = await callUnary(client, QueryService.method.listWindows, req);
    assert.equal(first.windows.length, 300);
    // New windows inside the range (later ones, and one ending before the token's position).
    await sendWindows(agents[0] as AgentStream, "range-a", [window("range-a", A, "web", 6_000), window("range-a", A, "web", 5_000)]);
    const rest: StoredWindow[] = [...first.windows];
    let token = first.nextPageToken;
    while (token !== "") {
      const p = await callUnary(client, QueryService.method.listWindows, { ...req, pageToken: token });
      rest.push(...p.windows);
      token = p.nextPageToken;
    }
    const keysSeen = rest.map((w) => `${w.window?.node}/${w.spoolId}/${w.spoolSeq}/${w.index}`);
    assert.equal(new Set(keysSeen).size, keysSeen.length, "no window twice");
    // A: 5,000..5,999 (1000) plus the new 6,000; B: none (it stops at 4,999); the one ending at an old time may come before the token.
    assert.ok(rest.filter((w) => w.window?.containerId === A).length >= 1001);
    assert.equal(rest.filter((w) => w.window?.containerId === B).length, 0);

    await publish(agents[0] as AgentStream, [{ case: "graphDelete", value: { containerId: B } }]);
    const gone = await walk({ since: timestampFromDate(new Date(T0)), until: timestampFromDate(new Date(T0 + 100 * STEP_MS)), container: "job" });
    assert.equal(gone.windows.length, 100, "windows of a container whose graph is gone, by the name they carry");
  });
});

describe("the window time index", () => {
  it("loses a window's entry when the window is pruned", async () => {
    await withTempLevel(async (db) => {
      const t = await TelemetryStore.open(db, { maxWindowsPerNode: 100 });
      for (let seq = 1; seq <= 12; seq++) {
        const ws = Array.from({ length: 10 }, (_, i) => window("n1", A, "web", seq * 10 + i));
        await t.put("n1", create(TelemetryItemSchema, { spoolId: "sp", spoolSeq: BigInt(seq), body: { case: "windows", value: { windows: ws } } }));
      }
      let windows = 0;
      let index = 0;
      for await (const _ of db.keys(keys.windowRange)) windows++;
      for await (const _ of db.keys(keys.windowEndRange)) index++;
      assert.ok(windows < 120, `pruned to ${windows}`);
      assert.equal(index, windows);
      assert.equal(t.stats("n1").windows, windows);
      const listed: StoredWindow[] = [];
      for await (const e of t.windowsEnded({}, 0, Number.MAX_SAFE_INTEGER)) listed.push(e.item);
      assert.equal(listed.length, windows);
    });
  });


  it("is built when an older store opens", async () => {
    await withTempLevel(async (db) => {
      const t = await TelemetryStore.open(db);
      const ws = Array.from({ length: 50 }, (_, i) => window("n1", A, "web", i));
      await t.put("n1", create(TelemetryItemSchema, { spoolId: "sp", spoolSeq: 1n, body: { case: "windows", value: { windows: ws } } }));
      // As a store from before the index: no index keys, no marker.
      const indexKeys: string[] = [];
      for await (const k of db.keys(keys.windowEndRange)) indexKeys.push(k);
      assert.equal(indexKeys.length, 50);
      await db.batch([...indexKeys, keys.windowEndIndexed].map((key) => ({ type: "del" as const, key })));
      const reopened = await TelemetryStore.open(db);
      const got: StoredWindow[] = [];
      for await (const e of reopened.windowsEnded({}, T0 + 10 * STEP_MS, T0 + 20 * STEP_MS)) got.push(e.item);
      assert.deepEqual(
        got.map((s) => endMs(s)),
        Array.from({ length: 10 }, (_, i) => T0 + (10 + i) * STEP_MS),
      );
    });
  });
});
