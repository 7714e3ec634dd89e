/**
 * Watch streams whose clients do not read, over real gRPC: while an agent publishes 25 MiB of
 * graph changes (a grpc-js client itself takes 16 messages before it stops reading), what the aggregator holds for each such stream stays under its bound (measured
 * as the bytes written and not yet taken, not as time), the events past it are dropped and
 * counted, another client's call still answers, and a client that reads again gets a RESYNC
 * marker and the current graphs instead of every change it missed; a telemetry watch likewise.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { GraphEvent_Type, QueryService, type GraphEvent, type TelemetryEvent } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { TelemetryItemSchema, WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { callServerStream, callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const STREAMS = 4;
const CHANGES = 100;
const MIB = 1024 * 1024;
/** Each change: a graph of a quarter MiB. */
const CHANGE_BYTES = MIB / 4;
/** The aggregator's per-stream bound (bounded-watch.ts) and one message past it. */
const BOUND = 4 * MIB + 1.1 * CHANGE_BYTES;

describe("watch streams whose clients do not read", () => {
  const dir = tempDir("sl-slow-");
  let agg: RunningAggregator;
  let agent: AgentStream;
  const clients: grpc.Client[] = [];
  const streams: Array<{ call: grpc.ClientReadableStream<GraphEvent>; events: GraphEvent[] }> = [];
  const telemetryCalls: Array<grpc.ClientReadableStream<TelemetryEvent>> = [];

  /** A client on a connection of its own: a stalled stream must not share a connection window with the others. */
  const client = () => {
    const c = makeClient(QueryService, `127.0.0.1:${agg.port}`, channelCredentials("insecure"), { "grpc.use_local_subchannel_pool": 1 });
    clients.push(c);
    return c;
  };
  const metric = async (name: string) => {
    const values = (await agg.metrics.registry.getSingleMetric(name)?.get())?.values ?? [];
    return values.reduce((sum, v) => sum + v.value, 0);
  };
  const id = containerIdOf(1, 0x51);
  const change = (i: number) => upsertOf(testGraph(id, "slow-node", { containerName: `v${i}`, layers: [{ layerId: `rw:${id}`, name: "rw", createdBy: `${i} ${"x".repeat(CHANGE_BYTES)}` }] }));

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    agent = await connectAgent(makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials("insecure")), "slow-node");
  });
  after(async () => {
    agent.close();
    for (const s of streams) s.call.cancel();
    for (const c of telemetryCalls) c.cancel();
    for (const c of clients) c.close();
    await agg.stop();
  });

  it("holds at most its bound per stream, drops and counts the rest, and answers other calls", async () => {
    for (let i = 0; i < STREAMS; i++) {
      const call = callServerStream(client(), QueryService.method.watchGraphs, {});
      const events: GraphEvent[] = [];
      call.on("data", (e: GraphEvent) => events.push(e));
      call.on("error", () => undefined);
      // Stop reading at once: grpc-js fills the stream's buffer (16 messages), then takes no more.
      // (A grpc-js stream that was never read at all takes every message into a queue of its own.)
      call.pause();
      streams.push({ call, events });
    }
    await waitFor("the streams open", async () => ((await metric("shadowlayer_aggregator_watchers")) >= STREAMS ? true : undefined));

    let peak = 0;
    for (let i = 0; i < CHANGES; i++) {
      await publish(agent, [change(i)]);
      peak = Math.max(peak, await metric("shadowlayer_aggregator_watch_queued_bytes"));
    }
    assert.ok(peak > 0, "the queued bytes are measured");
    assert.ok(peak <= STREAMS * BOUND, `held ${(peak / MIB).toFixed(1)} MiB for ${STREAMS} streams (at most ${((STREAMS * BOUND) / MIB).toFixed(1)})`);
    const dropped = await metric("shadowlayer_aggregator_watch_dropped_events_total");
    assert.ok(dropped >= (STREAMS * CHANGES) / 2, `the changes past the bound were dropped (${dropped} of ${STREAMS * CHANGES})`);

    const other = await callUnary(client(), QueryService.method.listContainers, {}, { deadlineMs: 5000 });
    assert.deepEqual(other.containers.map((c) => c.containerName), [`v${CHANGES - 1}`]);
  });

  it("resyncs a client that reads again: a RESYNC marker, then the current graph, instead of every change", async () => {
    const s = streams[0];
    assert.ok(s !== undefined);
    const events = s.events;
    s.call.resume();
    const last = `v${CHANGES - 1}`;
    await waitFor("the current graph", () => (events.some((e) => e.graph?.containerName === last) ? true : undefined), 60_000);
    await waitFor("the end of the new snapshot", () => (events.at(-1)?.type === GraphEvent_Type.SNAPSHOT_DONE ? true : undefined), 10_000);
    const resync = events.findIndex((e) => e.type === GraphEvent_Type.RESYNC);
    assert.ok(resync > 0, `a RESYNC marker came (events: ${events.map((e) => GraphEvent_Type[e.type]).join(" ")})`);
    assert.ok(events.findIndex((e) => e.graph?.containerName === last) > resync, "the current graph follows it");
    const upserts = events.filter((e) => e.type === GraphEvent_Type.UPSERT).length;
    assert.ok(upserts < CHANGES / 2, `${upserts} upserts, not all ${CHANGES} changes`);
    assert.ok((await metric("shadowlayer_aggregator_watch_resyncs_total")) >= 1);
  });

  it("bounds and resyncs a telemetry watch the same way", async () => {
    const call = callServerStream(client(), QueryService.method.watchTelemetry, {});
    const events: TelemetryEvent[] = [];
    call.on("data", (e: TelemetryEvent) => events.push(e));
    call.on("error", () => undefined);
    call.pause();
    telemetryCalls.push(call);
    await waitFor("the stream open", async () => ((await metric("shadowlayer_aggregator_watchers")) >= STREAMS + 1 ? true : undefined));
    // 400 windows of 64 KiB each, 20 to a spool item.
    const name = "w".repeat(64 * 1024);
    for (let seq = 1; seq <= 20; seq++) {
      const windows = Array.from({ length: 20 }, (_, i) => create(WindowSummarySchema, { node: "slow-node", containerId: id, containerName: name, ticks: seq * 100 + i }));
      await publish(agent, [{ case: "telemetry", value: create(TelemetryItemSchema, { spoolId: "slow", spoolSeq: BigInt(seq), body: { case: "windows", value: { windows } } }) }]);
    }
    const dropped = (await agg.metrics.watchDropped.get()).values.find((v) => v.labels.stream === "telemetry")?.value ?? 0;
    assert.ok(dropped >= 200, `windows past the bound were dropped (${dropped} of 400)`);
    call.resume();
    await waitFor("the resync and the latest window", () => (events.at(-1)?.body.case === "snapshotDone" && events.some((e) => e.body.case === "resync") ? true : undefined), 30_000);
    const resync = events.findIndex((e) => e.body.case === "resync");
    const after = events.slice(resync).filter((e) => e.body.case === "window");
    assert.deepEqual(after.map((e) => (e.body.case === "window" ? e.body.value.ticks : -1)), [2019], "after the marker: the latest window");
    assert.ok(events.filter((e) => e.body.case === "window").length < 200, "not every window");
  });

  it("releases what a stream held when its client goes away", async () => {
    for (const s of streams) s.call.cancel();
    for (const c of telemetryCalls) c.cancel();
    await waitFor("no watcher left", async () => ((await metric("shadowlayer_aggregator_watchers")) === 0 ? true : undefined));
    assert.equal(await metric("shadowlayer_aggregator_watch_queued_bytes"), 0);
  });
});
