/**
 * `shadowlayer windows`: a time range of windows from a real aggregator (fed by a test agent's
 * stream), exported as JSON lines and as a JSON array with each layer's features by name, the
 * container's image and layer kinds and the anomaly verdict; a table for people; progress on
 * stderr; a bad flag refused with a sentence (an aggregator that is down: train-file.test.ts).
 * The export reads back (`train --from-file`) to the same vectors, and a hostile line is refused
 * with its reason.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { TelemetryItemSchema, WindowSummarySchema, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { decodeFeatures, encodeFeatures, FEATURE_COUNT, FEATURE_NAMES, FEATURE_VERSION } from "../../models/features.js";
import { exportWindow, importWindow } from "../../cli/window-export.js";
import { parseTimeFlag, parseTimeRange } from "../../cli/time-range.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const CLI = join(PACKAGE_ROOT, "dist", "cli", "main.js");
const execFileP = promisify(execFile);
const NODE = "export-node";
const ID = containerIdOf(7, 0xe1);
const GONE = containerIdOf(8, 0xe2);
const BASE = `sha256:${"a".repeat(64)}`;
const IMAGE_ID = `sha256:${"e".repeat(64)}`;
const N = 120;

function vectorOf(i: number): number[] {
  const v = Array.from({ length: FEATURE_COUNT }, (_, k) => i * 1000 + k);
  v[5] = Number.NaN; // unavailable: exported as null
  return v;
}

function windowOf(containerId: string, name: string, i: number, endMs: number): WindowSummary {
  return create(WindowSummarySchema, {
    node: NODE,
    containerId,
    containerName: name,
    start: timestampFromDate(new Date(endMs - 10_000)),
    end: timestampFromDate(new Date(endMs)),
    ticks: 10,
    featureVersion: FEATURE_VERSION,
    layers: [
      {
        layerId: BASE,
        layerName: "base",
        featuresF64le: encodeFeatures(vectorOf(i)),
        ...(i === 3 ? { anomaly: { score: 77, alerting: true, modelVersion: "v-test", reasons: [{ feature: "cpu_seconds.rate", sigma: 6.2 }] } } : {}),
      },
    ],
  });
}

describe("shadowlayer windows", () => {
  const dir = tempDir("sl-wexport-");
  let agg: RunningAggregator;
  let client: grpc.Client;
  let agent: AgentStream;
  let address: string;
  const t0 = Date.now() - 2 * 3_600_000;
  const cli = (...args: string[]) => execFileP(process.execPath, [CLI, ...args, "--aggregator", address, "--insecure"], { maxBuffer: 256 * 1024 * 1024, timeout: 60_000 });

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    address = `127.0.0.1:${agg.port}`;
    client = makeClient(AgentService, address, channelCredentials("insecure"));
    agent = await connectAgent(client, NODE);
    await publish(agent, [upsertOf(testGraph(ID, NODE, { containerName: "web", image: "example/web:1", imageId: IMAGE_ID })), upsertOf(testGraph(GONE, NODE, { containerName: "gone" }))]);
    const ws = [...Array.from({ length: N }, (_, i) => windowOf(ID, "web", i, t0 + i * 10_000)), windowOf(GONE, "gone", 0, t0 + 5_000)];
    await agent.send({ case: "telemetry", value: create(TelemetryItemSchema, { spoolId: "sp", spoolSeq: 1n, body: { case: "windows", value: { windows: ws } } }) });
    await publish(agent, [{ case: "graphDelete", value: { containerId: GONE } }]);
  });
  after(async () => {
    agent.close();
    client.close();
    await agg.stop();
  });

  it("exports a range as JSON lines: features by name, image, layer kinds, anomaly; progress on stderr", async () => {
    const { stdout, stderr } = await cli("windows", "--since", "3h", "--json");
    const lines = stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, N + 1);
    const web = lines.filter((l) => l.container_name === "web");
    assert.equal(web.length, N);
    const first = web[0] as { image_id: string; image: string; feature_version: string; seconds: number; layers: Array<{ layer_id: string; kind: string; features: Record<string, number | null>; anomaly: unknown }> };
    assert.equal(first.image_id, IMAGE_ID);
    assert.equal(first.image, "example/web:1");
    assert.equal(first.feature_version, FEATURE_VERSION);
    assert.equal(first.seconds, 10);
    const l0 = first.layers[0];
    assert.equal(l0?.kind, "image");
    assert.deepEqual(Object.keys(l0?.features ?? {}), [...FEATURE_NAMES]);
    assert.equal(l0?.features["cpu_seconds.sum"], 0);
    assert.equal(l0?.features[FEATURE_NAMES[5] as string], null, "unavailable is null, not 0");
    assert.equal(l0?.anomaly, null);
    const withAnomaly = web[3] as { layers: Array<{ anomaly: { score: number; alerting: boolean; reasons: Array<{ feature: string }> } }> };
    assert.equal(withAnomaly.layers[0]?.anomaly.score, 77);
    assert.equal(withAnomaly.layers[0]?.anomaly.reasons[0]?.feature, "cpu_seconds.rate");
    const gone = lines.find((l) => l.container_name === "gone");
    assert.equal(gone?.image_id, null, "a container whose graph is gone: no image");
    assert.match(stderr, /windows: 121 read \(through /);
  });

  it("narrows by time and container; a JSON array; a table with the anomaly", async () => {
    const since = new Date(t0 + 3 * 10_000).toISOString();
    const until = new Date(t0 + 13 * 10_000).toISOString();
    const arr = JSON.parse((await cli("windows", "--since", since, "--until", until, "--container", "web", "--json", "--array")).stdout) as Array<{ container_name: string }>;
    assert.equal(arr.length, 10);
    assert.ok(arr.every((w) => w.container_name === "web"));
    const gone = (await cli("windows", "--since", "3h", "--container", "gone", "--node", NODE, "--json")).stdout.trim().split("\n");
    assert.equal(gone.length, 1, "a removed container's windows by its name");
    const table = (await cli("windows", "--since", since, "--until", until)).stdout;
    assert.match(table, /END\s+CONTAINER\s+NODE\s+IMAGE\s+SECONDS\s+LAYERS\s+FEATURES\s+ANOMALY/);
    assert.equal(table.trim().split("\n").length, 11);
    assert.match(table, /77! cpu_seconds\.rate/);
  });

  it("refuses bad flags with a sentence", async () => {
    await assert.rejects(cli("windows", "--since", "yesterday"), (e: { stderr: string }) => /--since: expected a duration back from now \(90s, 30m, 24h, 7d\) or an ISO time, got "yesterday"/.test(e.stderr));
  });
});

describe("the window export format", () => {
  it("reads back to the same vector (unavailable stays unavailable)", () => {
    const w = windowOf(ID, "web", 9, Date.parse("2026-11-28T10:00:00Z"));
    const line = JSON.parse(JSON.stringify(exportWindow(w, { imageId: IMAGE_ID, image: "example/web:1", kinds: new Map([[BASE, "image"]]) })));
    const back = importWindow(line);
    assert.equal(back.imageId, IMAGE_ID);
    assert.equal(back.kinds.get(BASE), "image");
    assert.equal(back.window.featureVersion, FEATURE_VERSION);
    const v = decodeFeatures(back.window.layers[0]?.featuresF64le ?? new Uint8Array());
    const want = vectorOf(9);
    assert.equal(v.length, want.length);
    v.forEach((x, i) => (Number.isNaN(want[i]) ? assert.ok(Number.isNaN(x)) : assert.equal(x, want[i])));
  });

  it("refuses what is not an exported window", () => {
    const bad = (o: unknown, re: RegExp) => assert.throws(() => importWindow(o), re);
    bad([], /not a JSON object/);
    bad({ layers: "x" }, /layers is not an array/);
    bad({ start: "2026-01-01T00:00:00Z", end: "2026-01-01T00:00:10Z", layers: [{ layer_id: "x", features: { "cpu_seconds.sum": "1e999" } }] }, /features\.cpu_seconds\.sum is not a number/);
    bad({ start: "soon", end: "2026-01-01T00:00:10Z", layers: [] }, /start is not an ISO time/);
    bad({ start: "2026-01-01T00:00:00Z", end: "2026-01-01T00:00:10Z", layers: Array.from({ length: 2000 }, () => ({})) }, /2000 layers/);
  });

  it("reads --since as a duration back from now or an ISO time", () => {
    const now = new Date("2026-11-28T12:00:00Z");
    assert.equal(parseTimeFlag("24h", "--since", now).toISOString(), "2026-11-27T12:00:00.000Z");
    assert.equal(parseTimeFlag("90s", "--since", now).toISOString(), "2026-11-28T11:58:30.000Z");
    assert.equal(parseTimeFlag("2026-11-01T00:00:00Z", "--since", now).toISOString(), "2026-11-01T00:00:00.000Z");
    assert.throws(() => parseTimeFlag("-1h", "--since", now), /--since: expected/);
    assert.throws(() => parseTimeRange({ since: "1h", until: "2h" }, now), /--until \(2026-11-28T10:00:00\.000Z\) must be after --since/);
  });
});
