/**
 * Paged List* replies over real gRPC: one test agent publishes 10,000 containers whose summaries
 * and scores together exceed the 4 MiB message limit (as 100,000 ordinary ones do). Each reply is
 * a bounded page, walking the tokens lists every container once in a stable order, a token is
 * refused with other filters, windows and detections page through their newest `limit`, an
 * image's packages page too, and the CLI's `containers`, `scores`, `detections` and `sbom` print
 * everything.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { ListContainersResponseSchema, QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { TelemetryItemSchema, WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentBody, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const N = 10_000;
const NODE = "paged-node";
/** Long enough that all N summaries (about 800 bytes each) make one 8 MB reply. */
const IMAGE = `registry.example/${"team/".repeat(140)}app:1`;
const CLI = join(PACKAGE_ROOT, "dist", "cli", "main.js");
const execFileP = promisify(execFile);

describe("paged queries (10,000 containers from one agent)", () => {
  const dir = tempDir("sl-pages-");
  let agg: RunningAggregator;
  let client: grpc.Client;
  let agent: AgentStream;
  let address: string;

  const ids = Array.from({ length: N }, (_, i) => containerIdOf(i, 0x7));
  const invalid = (re: RegExp) => (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && re.test(err.details);
  const cli = async (...args: string[]) => (await execFileP(process.execPath, [CLI, ...args, "--aggregator", address, "--insecure"], { maxBuffer: 512 * 1024 * 1024, timeout: 120_000 })).stdout;

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger(), caps: { maxContainers: 50_000, maxGraphBytes: 1024 * 1024 * 1024 } });
    address = `127.0.0.1:${agg.port}`;
    client = makeClient(QueryService, address, channelCredentials("insecure"));
    const agentClient = makeClient(AgentService, address, channelCredentials("insecure"));
    agent = await connectAgent(agentClient, NODE);
    // Names in reverse of id order, so that the listing's order (node, name, id) is not the order of arrival.
    await publish(agent, ids.map((id, i) => upsertOf(testGraph(id, NODE, { containerName: `app-${String(N - i).padStart(6, "0")}`, image: IMAGE }))));
    await waitFor("every container scored", () => (agg.scores.all().length >= N ? true : undefined), 60_000);
  });
  after(async () => {
    agent.close();
    client.close();
    await agg.stop();
  });

  it("answers a bounded first page with a token, and walking the tokens lists every container once, in order", async () => {
    const first = await callUnary(client, QueryService.method.listContainers, {});
    assert.equal(first.containers.length, 1000, "the default page size");
    assert.notEqual(first.nextPageToken, "");

    const names: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await callUnary(client, QueryService.method.listContainers, { pageToken: token, pageSize: 6000 });
      assert.ok(page.containers.length <= 6000);
      names.push(...page.containers.map((c) => c.containerName));
      token = page.nextPageToken;
      pages++;
      // A container that arrives mid-walk does not disturb the order of the rest.
      if (pages === 2) await publish(agent, [upsertOf(testGraph(containerIdOf(0, 0x8), NODE, { containerName: "app-000000" }))]);
    } while (token !== "");
    assert.equal(new Set(names).size, names.length, "no container twice");
    assert.deepEqual(names.filter((n) => n !== "app-000000"), [...names.filter((n) => n !== "app-000000")].sort(), "in name order");
    assert.equal(names.filter((n) => n !== "app-000000").length, N);
  });

  it("keeps a page under the message limit however many items it asks for", async () => {
    const page = await callUnary(client, QueryService.method.listContainers, { pageSize: 4_000_000_000 });
    assert.ok(page.containers.length <= 10_000, `${page.containers.length} items`);
    assert.ok(toBinary(ListContainersResponseSchema, page).length < 3 * 1024 * 1024, "a page stays well under 4 MiB");
    assert.notEqual(page.nextPageToken, "");
  });

  it("refuses a token made for other filters, and one it did not make", async () => {
    const page = await callUnary(client, QueryService.method.listContainers, { pageSize: 10 });
    await assert.rejects(callUnary(client, QueryService.method.listContainers, { node: NODE, pageToken: page.nextPageToken }), invalid(/page_token: it belongs to a request with other filters/));
    await assert.rejects(callUnary(client, QueryService.method.listScores, { pageToken: page.nextPageToken }), invalid(/other filters/));
    await assert.rejects(callUnary(client, QueryService.method.listContainers, { pageToken: "bm90IGEgdG9rZW4" }), invalid(/not a token this aggregator made/));
  });

  it("pages scores by container id", async () => {
    const first = await callUnary(client, QueryService.method.listScores, { pageSize: 500 });
    const next = await callUnary(client, QueryService.method.listScores, { pageSize: 500, pageToken: first.nextPageToken });
    const seen = [...first.containers, ...next.containers].map((s) => s.containerId);
    assert.equal(seen.length, 1000);
    assert.deepEqual(seen, [...agg.scores.all()].map((s) => s.containerId).sort().slice(0, 1000));
  });

  it("pages the newest `limit` windows, oldest first, and stops at the limit while more arrive", async () => {
    const batch = (seq: bigint, from: number, n: number): AgentBody => ({
      case: "telemetry",
      value: create(TelemetryItemSchema, {
        spoolId: "pages",
        spoolSeq: seq,
        body: { case: "windows", value: { windows: Array.from({ length: n }, (_, i) => create(WindowSummarySchema, { node: NODE, containerId: ids[(from + i) % N] ?? "", ticks: from + i })) } },
      }),
    });
    await publish(agent, [batch(1n, 0, 1500), batch(2n, 1500, 1500)]);
    const ticks: number[] = [];
    let token = "";
    do {
      const page = await callUnary(client, QueryService.method.listWindows, { node: NODE, limit: 2500, pageSize: 1000, pageToken: token });
      ticks.push(...page.windows.map((w) => w.window?.ticks ?? -1));
      token = page.nextPageToken;
      if (ticks.length === 1000) await publish(agent, [batch(3n, 3000, 10)]);
    } while (token !== "");
    assert.deepEqual(ticks, Array.from({ length: 2500 }, (_, i) => 500 + i), "the 2,500 newest when the walk began, oldest first");
  });

  it("pages an image's packages, and `sbom` lists them all", async () => {
    const imageId = `sha256:${"f".repeat(64)}`;
    const own = containerIdOf(1, 0x9);
    await publish(agent, [upsertOf(testGraph(own, NODE, { containerName: "big-image", imageId }))]);
    // Deep paths: 3,000 packages take 2.5 MB, more than one page holds.
    const packages = Array.from({ length: 3000 }, (_, i) => ({ type: "npm", name: `pkg-${i}`, version: "1.0.0", path: `${"node_modules/deep/".repeat(45)}pkg-${i}/package.json`, layerId: `sha256:${"a".repeat(64)}` }));
    await publish(agent, [{ case: "inventory", value: { imageId, packages, layerIds: [`sha256:${"a".repeat(64)}`] } }]);
    const first = await callUnary(client, QueryService.method.getInventory, { container: "big-image" });
    assert.equal(first.inventory?.packages.length, 1000);
    assert.equal(first.graph?.containerId, own, "every page carries the graph");
    const most = await callUnary(client, QueryService.method.getInventory, { container: "big-image", pageSize: 10_000 });
    assert.ok((most.inventory?.packages.length ?? 0) < 3000, "a page stops at its byte bound");
    assert.notEqual(most.nextPageToken, "");
    const bom = JSON.parse(await cli("sbom", "big-image")) as { components: Array<{ name: string }> };
    assert.equal(bom.components.length, 3000);
    assert.equal(new Set(bom.components.map((c) => c.name)).size, 3000);
  });

  it("prints every container, score and detection through the CLI", async () => {
    const detections: AgentBody[] = Array.from({ length: 1200 }, (_, i) => ({
      case: "telemetry",
      value: create(TelemetryItemSchema, {
        spoolId: "pages-det",
        spoolSeq: BigInt(i + 1),
        body: { case: "detection", value: { id: `d${i}`, node: NODE, containerId: ids[i] ?? "", layerId: `rw:${ids[i] ?? ""}`, rule: "drift", reason: "added", path: `/tmp/x${i}`, at: timestampFromDate(new Date()) } },
      }),
    }));
    await publish(agent, detections);
    const containers = JSON.parse(await cli("containers", "--json")) as unknown[];
    assert.equal(containers.length, agg.store.size);
    const scores = JSON.parse(await cli("scores", "--json")) as Array<{ risk: number }>;
    assert.equal(scores.length, agg.scores.all().length);
    assert.ok(scores.every((s, i) => i === 0 || (scores[i - 1]?.risk ?? 0) >= s.risk), "riskiest first");
    const found = JSON.parse(await cli("detections", "--json", "--limit", "1100")) as Array<{ path: string }>;
    assert.deepEqual(found.map((d) => d.path), Array.from({ length: 1100 }, (_, i) => `/tmp/x${i + 100}`));
  });
});
