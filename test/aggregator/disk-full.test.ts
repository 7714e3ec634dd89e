/**
 * Disk full under a running aggregator: its data dir is on a small tmpfs this test makes, an agent
 * fills level's memtable, a filler file takes all but a little of the space, and the agent writes
 * on until one is refused (LevelDB's compaction then fails, and its error stays even after space
 * returns). Reads (ListContainers, GetLayerGraph, ListWindows) still answer, /readyz is 503 with
 * the store's reason, AgentService's health is NOT_SERVING, the refused write is not acked; once
 * the filler is gone the store recovers without a restart: /readyz is 200 and the agent's re-sent
 * write is acked and stored. A restart afterwards shows every acked write kept across the
 * in-place reopen.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { TelemetryItemSchema, WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { callUnary, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { startAggregator, type AggregatorOptions, type RunningAggregator } from "../../aggregator/index.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { smallTmpfs } from "../harness/small-tmpfs.js";


const NODE = "node-a";
const hex = (bytes: number) => randomBytes(bytes).toString("hex");

/** A graph of about 17 KB of incompressible ids and names, so a few hundred fill level's 4 MB memtable. */
function bigGraph(): LayerGraph {
  const containerId = hex(32);
  return create(LayerGraphSchema, {
    containerId,
    containerName: `app-${containerId.slice(0, 8)}`,
    node: NODE,
    state: "running",
    image: "example/app:1",
    imageId: `sha256:${hex(32)}`,
    layers: Array.from({ length: 60 }, (_, index) => ({ layerId: `sha256:${hex(32)}`, name: hex(100), kind: LayerKind.IMAGE, index })),
  });
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("disk full under the aggregator (a small tmpfs)", () => {
  const disk = smallTmpfs("sl-disk-full-", "24m");
  let agg: RunningAggregator | undefined;
  let options: AggregatorOptions;
  const clients: grpc.Client[] = [];
  const streams: AgentStream[] = [];

  const running = (): RunningAggregator => {
    if (agg === undefined) throw new Error("aggregator not running");
    return agg;
  };

  const client = (svc: typeof AgentService | typeof QueryService) => {
    const c = makeClient(svc, `127.0.0.1:${running().port}`, grpc.credentials.createInsecure());
    clients.push(c);
    return c;
  };

  const connect = async (): Promise<AgentStream> => {
    const s = await connectAgent(client(AgentService), NODE);
    streams.push(s);
    return s;
  };

  const readyz = async (): Promise<{ status: number; body: string }> => {
    const res = await fetch(`http://127.0.0.1:${running().httpPort}/readyz`);
    return { status: res.status, body: await res.text() };
  };

  /** grpc.health.v1 status of `service` (1 SERVING, 2 NOT_SERVING), from the raw protobuf bytes. */
  const healthOf = (service: string) =>
    new Promise<number | undefined>((resolve, reject) => {
      const name = Buffer.from(service);
      const req = Buffer.concat([Buffer.from([0x0a, name.length]), name]);
      client(QueryService).makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, req, (err, res) => (err || !res ? reject(err) : resolve(res[0] === 0x08 ? res[1] : undefined)));
    });

  const storeFailingMetric = async () => (await running().metrics.storeFailing.get()).values[0]?.value;

  before(async () => {
    options = { dataDir: join(disk.path, "agg"), listen: "127.0.0.1:0", http: "127.0.0.1:0", tls: "insecure", log: silentLogger(), storeRecovery: { minMs: 100, maxMs: 500 } };
    agg = await startAggregator(options);
  });

  after(async () => {
    for (const s of streams) s.close();
    for (const c of clients) c.close();
    await agg?.stop();
  });

  it("serves reads and says why while writes fail, and writes again once space is back", async () => {
    const agent = await connect();
    const stored: LayerGraph[] = [];
    // About 3 MB: level's memtable (4 MB) is mostly full, its log holds the same on disk.
    for (let i = 0; i < 180; i++) {
      const g = bigGraph();
      await agent.send({ case: "graphUpsert", value: { graph: g } });
      stored.push(g);
    }
    const first = stored[0];
    assert.ok(first !== undefined);
    await agent.send({
      case: "telemetry",
      value: create(TelemetryItemSchema, { spoolId: "s1", spoolSeq: 1n, body: { case: "windows", value: { windows: [create(WindowSummarySchema, { node: NODE, containerId: first.containerId, ticks: 7 })] } } }),
    });
    assert.equal((await readyz()).status, 200);

    // Room for the log to take the memtable past 4 MB, not for the table its compaction writes.
    await disk.fill(1_500_000);
    let refused: { graph: LayerGraph; err: grpc.ServiceError } | undefined;
    for (let i = 0; i < 600 && refused === undefined; i++) {
      const g = bigGraph();
      try {
        await agent.send({ case: "graphUpsert", value: { graph: g } });
        stored.push(g);
      } catch (err) {
        refused = { graph: g, err: err as grpc.ServiceError };
      }
    }
    assert.ok(refused !== undefined, "a write failed on the full disk");
    assert.equal(refused.err.code, grpc.status.UNAVAILABLE, refused.err.message);
    assert.match(refused.err.details, /No space left on device/);
    assert.equal(running().store.get(refused.graph.containerId), undefined, "the refused write was not stored");

    const failing = await readyz();
    assert.equal(failing.status, 503);
    assert.match(failing.body, /store failing since .*No space left on device/);
    assert.equal(await storeFailingMetric(), 1);
    assert.equal(await healthOf(AgentService.typeName), 2, "AgentService NOT_SERVING while writes fail");
    assert.equal(await healthOf(QueryService.typeName), 1, "QueryService still SERVING");

    // Reads answer: from memory (graphs) and from level itself (windows).
    const q = client(QueryService);
    const list = await callUnary(q, QueryService.method.listContainers, {}, { deadlineMs: 5000 });
    assert.ok(list.containers.length > 0);
    for (const g of [first, stored[stored.length - 1]]) {
      assert.ok(g !== undefined);
      assert.equal((await callUnary(q, QueryService.method.getLayerGraph, { container: g.containerId }, { deadlineMs: 5000 })).containerId, g.containerId);
    }
    const windows = await callUnary(q, QueryService.method.listWindows, { container: first.containerId }, { deadlineMs: 5000 });
    assert.equal(windows.windows.length, 1);

    // An agent connecting now is not acked either (its hello writes the node record).
    await assert.rejects(connect(), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);

    await disk.free();
    const back = await waitFor("/readyz to be 200 again", async () => {
      const r = await readyz();
      return r.status === 200 ? r : undefined;
    });
    assert.match(back.body, /serving/);
    assert.equal(await storeFailingMetric(), 0);
    assert.equal(await healthOf(AgentService.typeName), 1);

    // The agent's spool sends the refused write again: it is acked and stored.
    const again = await connect();
    await again.send({ case: "graphUpsert", value: { graph: refused.graph } });
    stored.push(refused.graph);
    assert.equal(running().store.get(refused.graph.containerId)?.containerId, refused.graph.containerId);
    const more = bigGraph();
    await again.send({ case: "graphUpsert", value: { graph: more } });
    stored.push(more);

    // Nothing acked was lost: a restarted aggregator reads every graph back.
    for (const s of streams) s.close();
    await running().stop();
    agg = undefined;
    agg = await startAggregator(options);
    const missing = stored.filter((g) => running().store.get(g.containerId) === undefined);
    assert.deepEqual(
      missing.map((g) => g.containerId),
      [],
    );
  });
});
