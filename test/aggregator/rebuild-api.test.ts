/**
 * The rebuild calls over real gRPC on a real aggregator (its scheduler given test doubles of the
 * pool and the runner: the real ones are tested with a real engine elsewhere): ListRebuilds in
 * pages by job id with its filters, the builders, the destination and the counts; WatchRebuilds'
 * snapshot and changes; Cancel/Force/Rerun and their errors; and the `rebuilds` command.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AdminService, QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { RebuildEvent_Type, RebuildState, type RebuildEvent } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { callServerStream, callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { TestBuilderPool, TestJobRunner } from "../harness/rebuild-test-doubles.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const NODE = "rebuild-node";
/** 17 images: two of their jobs' ids share a first hex digit. */
const IMAGES = [..."0123456789abcdefg"].map((c, i) => ({ id: `sha256:${(i + 1).toString(16).padStart(2, "0").repeat(32)}`, name: `example/app-${c}:1` }));
const HOSTILE_IMAGE = "evil\x1b]0;pwned\x07:1";
const CLI = join(PACKAGE_ROOT, "dist", "cli", "main.js");
const execFileP = promisify(execFile);

describe("rebuild API over gRPC", () => {
  const dir = tempDir("sl-rebuild-api-");
  let agg: RunningAggregator;
  let query: grpc.Client;
  let admin: grpc.Client;
  let agent: AgentStream;
  let address: string;
  const pool = new TestBuilderPool([{ name: "local", concurrency: 1 }]);
  const runner = new TestJobRunner();
  const code = (c: grpc.status) => (err: grpc.ServiceError) => err.code === c;
  const cli = async (...args: string[]) => (await execFileP(process.execPath, [CLI, ...args, "--aggregator", address, "--insecure"], { timeout: 60_000 })).stdout;

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger(), rebuildScheduler: { pool, runner, startupGraceMs: 0, retryMinMs: 60_000 } });
    address = `127.0.0.1:${agg.port}`;
    query = makeClient(QueryService, address, channelCredentials("insecure"));
    admin = makeClient(AdminService, address, channelCredentials("insecure"));
    agent = await connectAgent(makeClient(AgentService, address, channelCredentials("insecure")), NODE);
    const graphs = IMAGES.map((im, i) => testGraph(containerIdOf(i, 0x5), NODE, { image: im.name, imageId: im.id }));
    graphs.push(testGraph(containerIdOf(99, 0x5), NODE, { image: HOSTILE_IMAGE, imageId: `sha256:${"9".repeat(64)}` }));
    await publish(agent, graphs.map(upsertOf));
    await waitFor("graphs stored", () => (agg.store.size === graphs.length ? true : undefined));
  });
  after(async () => {
    agent.close();
    query.close();
    admin.close();
    await agg.stop();
  });

  it("forces a job for each image by name and lists them in pages by job id, with builders, destination and counts", async () => {
    for (const im of IMAGES) {
      const j = await callUnary(admin, AdminService.method.forceRebuild, { image: im.name });
      assert.equal(j.imageId, im.id);
      assert.deepEqual(j.reasons, ["forced"]);
      assert.equal(j.forced, true);
    }
    const ids: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await callUnary(query, QueryService.method.listRebuilds, { pageSize: 5, pageToken: token });
      assert.ok(page.jobs.length <= 5);
      ids.push(...page.jobs.map((j) => j.id));
      assert.equal(page.destination, "local engine (no registry configured)");
      assert.deepEqual(page.builders.map((b) => [b.name, b.concurrency]), [["local", 1]]);
      assert.equal(Object.values(page.counts).reduce((a, b) => a + b, 0), IMAGES.length);
      token = page.nextPageToken;
      pages++;
    } while (token !== "");
    assert.equal(pages, 4);
    assert.deepEqual(ids, [...ids].sort(), "by job id");
    assert.equal(new Set(ids).size, IMAGES.length);
    await assert.rejects(callUnary(query, QueryService.method.listRebuilds, { pageSize: 5, pageToken: token || "bm90LWEtdG9rZW4", image: IMAGES[0]?.name ?? "" }), code(grpc.status.INVALID_ARGUMENT));
  });

  it("filters by job (id or unique prefix) and image (id or name), and says NOT_FOUND / INVALID_ARGUMENT for an unknown or ambiguous job", async () => {
    const all = (await callUnary(query, QueryService.method.listRebuilds, {})).jobs;
    const one = all[0];
    assert.ok(one !== undefined);
    assert.deepEqual((await callUnary(query, QueryService.method.listRebuilds, { job: one.id.slice(0, 10) })).jobs.map((j) => j.id), [one.id]);
    assert.deepEqual((await callUnary(query, QueryService.method.listRebuilds, { image: one.image })).jobs.map((j) => j.id), [one.id]);
    assert.deepEqual((await callUnary(query, QueryService.method.listRebuilds, { image: one.imageId })).jobs.map((j) => j.id), [one.id]);
    await assert.rejects(callUnary(query, QueryService.method.listRebuilds, { job: "ffffffffffffff" }), code(grpc.status.NOT_FOUND));
    const byFirst = new Map<string, number>();
    for (const j of all) byFirst.set(j.id[0] ?? "", (byFirst.get(j.id[0] ?? "") ?? 0) + 1);
    const shared = [...byFirst].find(([, n]) => n > 1)?.[0] ?? "";
    await assert.rejects(callUnary(query, QueryService.method.listRebuilds, { job: shared }), code(grpc.status.INVALID_ARGUMENT));
    await assert.rejects(callUnary(admin, AdminService.method.cancelRebuild, { job: shared }), code(grpc.status.INVALID_ARGUMENT));
    await assert.rejects(callUnary(admin, AdminService.method.cancelRebuild, { job: "ffffffffffffff" }), code(grpc.status.NOT_FOUND));
    await assert.rejects(callUnary(admin, AdminService.method.rerunRebuild, { job: "ffffffffffffff" }), code(grpc.status.NOT_FOUND));
    await assert.rejects(callUnary(admin, AdminService.method.forceRebuild, { image: "no-such-image:1" }), code(grpc.status.NOT_FOUND));
    await assert.rejects(callUnary(admin, AdminService.method.forceRebuild, { image: IMAGES[0]?.name ?? "", strategy: "magic" }), code(grpc.status.INVALID_ARGUMENT));
  });

  it("watches: every job, SNAPSHOT_DONE, then each change (a cancel, a build's progress, a rerun)", async () => {
    const events: RebuildEvent[] = [];
    const stream = callServerStream(query, QueryService.method.watchRebuilds, {});
    stream.on("data", (e: RebuildEvent) => events.push(e));
    stream.on("error", () => undefined);
    try {
      await waitFor("snapshot", () => (events.some((e) => e.type === RebuildEvent_Type.SNAPSHOT_DONE) ? true : undefined));
      const snapshot = events.splice(0);
      assert.equal(snapshot.filter((e) => e.type === RebuildEvent_Type.UPSERT).length, IMAGES.length);
      // The running one is cancelled: its build stops, and the watch hears it.
      const running = await runner.next();
      const cancelled = await callUnary(admin, AdminService.method.cancelRebuild, { job: running.job.id.slice(0, 12) });
      assert.equal(cancelled.state, RebuildState.CANCELLED);
      assert.equal(running.signal.aborted, true);
      await waitFor("cancel seen", () => (events.some((e) => e.jobId === running.job.id && e.job?.state === RebuildState.CANCELLED) ? true : undefined));
      // The next build runs and ends; its progress and its end are seen.
      const next = await runner.next();
      next.succeed();
      await waitFor("ready seen", () => (events.some((e) => e.jobId === next.job.id && e.job?.state === RebuildState.READY && e.job.progress === 100) ? true : undefined));
      assert.ok(events.some((e) => e.jobId === next.job.id && e.job?.state === RebuildState.RUNNING && e.job.progress === 25), "progress while running");
      const again = await callUnary(admin, AdminService.method.rerunRebuild, { job: running.job.id });
      assert.equal(again.state, RebuildState.QUEUED);
      await assert.rejects(callUnary(admin, AdminService.method.rerunRebuild, { job: running.job.id }), code(grpc.status.FAILED_PRECONDITION));
    } finally {
      stream.cancel();
    }
  });

  it("`rebuilds` prints the table, the builders and the destination; --job the detail; --json the protobuf JSON; cancel through the CLI", async () => {
    const forced = await cli("rebuilds", "force", "--image", HOSTILE_IMAGE, "--strategy", "restore");
    const hostile = (await callUnary(query, QueryService.method.listRebuilds, { image: HOSTILE_IMAGE })).jobs[0];
    assert.ok(hostile !== undefined);
    assert.match(forced, new RegExp(`^job ${hostile.id} forced: evil\\\\x1b`));
    const table = await cli("rebuilds");
    assert.match(table, /^JOB\s+IMAGE\s+STRATEGY\s+STATE/m);
    assert.match(table, /evil\\x1b\]0;pwned\\x07:1/, "the hostile image name is escaped");
    assert.doesNotMatch(table, /\x1b/);
    assert.match(table, /builders:\n {2}local {2}healthy {2}\d\/1 running/);
    assert.match(table, /shadows stay in the local engine \(no registry configured\)/);
    const detail = await cli("rebuilds", "--job", hostile.id.slice(0, 12));
    assert.match(detail, new RegExp(`^job ${hostile.id}`));
    assert.match(detail, /strategy restore \(chosen by an operator\)/);
    const json = JSON.parse(await cli("rebuilds", "--json", "--image", HOSTILE_IMAGE)) as { jobs: Array<{ id: string; image: string; reasons: string[] }>; destination: string };
    assert.deepEqual(json.jobs.map((j) => [j.id, j.image, j.reasons]), [[hostile.id, HOSTILE_IMAGE, ["forced"]]]);
    assert.equal(json.destination, "local engine (no registry configured)");
    const out = await cli("rebuilds", "cancel", hostile.id.slice(0, 12));
    assert.match(out, new RegExp(`job ${hostile.id} cancelled: .* is cancelled`));
    await assert.rejects(cli("rebuilds", "cancel", "ffffffffffff"), /no rebuild job ffffffffffff/);
  });
});
