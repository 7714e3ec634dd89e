/**
 * `shadowlayer train` from an exported windows file, as a user runs it (the built CLI): the
 * layer-windows of the image's containers are selected, a model trained and written as a
 * versioned artifact that the model library accepts, the summary printed; `--deploy` sends it
 * through a real aggregator to the test agent running the image and reports its outcome. Too few
 * windows, an unknown image, a bad file and an aggregator that is down each end in one clear
 * sentence.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AgentService, CommandStatus } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { parseArtifact } from "../../models/artifact.js";
import { encodeFeatures, FEATURE_COUNT, FEATURE_VERSION } from "../../models/features.js";
import { exportWindow } from "../../cli/window-export.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, publish, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const CLI = join(PACKAGE_ROOT, "dist", "cli", "main.js");
const execFileP = promisify(execFile);
const IMAGE = `sha256:${"3".repeat(64)}`;
const BASE = `sha256:${"a".repeat(64)}`;
const APP = `sha256:${"b".repeat(64)}`;
const ID = containerIdOf(1, 0x7a);
const NODE = "train-node";

/** `n` exported windows of a container (default "web" of IMAGE): two image layers and the writable one. */
function exportLines(n: number, c: { id: string; name: string; imageId: string } = { id: ID, name: "web", imageId: IMAGE }): string {
  let x = 9;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const vec = (scale: number) => encodeFeatures(Array.from({ length: FEATURE_COUNT }, (_, k) => scale * ((k % 5) + rnd() * 0.2)));
  const t0 = Date.parse("2026-11-27T00:00:00Z");
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const w = create(WindowSummarySchema, {
      node: NODE,
      containerId: c.id,
      containerName: c.name,
      start: timestampFromDate(new Date(t0 + i * 10_000)),
      end: timestampFromDate(new Date(t0 + (i + 1) * 10_000)),
      featureVersion: FEATURE_VERSION,
      layers: [
        { layerId: BASE, layerName: "base", featuresF64le: vec(1) },
        { layerId: APP, layerName: "app", featuresF64le: vec(2) },
        { layerId: `rw:${c.id}`, layerName: "rw", featuresF64le: vec(3) },
      ],
    });
    const kinds = new Map([
      [BASE, "image"],
      [APP, "image"],
      [`rw:${c.id}`, "writable"],
    ]);
    lines.push(JSON.stringify(exportWindow(w, { imageId: c.imageId, image: "example/web:1", kinds })));
  }
  return `${lines.join("\n")}\n`;
}

describe("shadowlayer train --from-file", () => {
  const dir = tempDir("sl-train-");
  let agg: RunningAggregator;
  let client: grpc.Client;
  let agent: AgentStream;
  let address: string;
  const run = (...args: string[]) => execFileP(process.execPath, [CLI, "train", ...args], { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });

  before(async () => {
    // The image's container, and a container of another image whose windows are not the image's.
    await writeFile(join(dir.path, "windows.jsonl"), exportLines(150) + exportLines(60, { id: containerIdOf(2, 0x7b), name: "api", imageId: `sha256:${"4".repeat(64)}` }));
    await writeFile(join(dir.path, "bad.jsonl"), `${exportLines(2)}{"layers": 7}\n`);
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    address = `127.0.0.1:${agg.port}`;
    client = makeClient(AgentService, address, channelCredentials("insecure"));
    agent = await connectAgent(client, NODE);
    agent.answer = (cmd) => (cmd.action.case === "modelUpdate" ? { status: CommandStatus.OK, message: `loaded ${cmd.action.value.version}` } : { status: CommandStatus.UNIMPLEMENTED });
    await publish(agent, [upsertOf(testGraph(ID, NODE, { containerName: "web", imageId: IMAGE })), { case: "syncComplete", value: { containerIds: [ID] } }]);
  });
  after(async () => {
    agent.close();
    client.close();
    await agg.stop();
  });

  it("trains the image's model from the file, writes a versioned artifact the library accepts, deploys it", async () => {
    const out = join(dir.path, "models");
    const { stdout, stderr } = await run("--from-file", join(dir.path, "windows.jsonl"), "--image", "web", "--out", out, "--epochs", "3", "--seed", "1", "--deploy", "--json", "--aggregator", address, "--insecure");
    const [r] = JSON.parse(stdout) as Array<{ ok: boolean; image_id: string; version: string; windows: number; backend: string; calibration_p995: number; train_seconds: number; file: string; deployments: Array<{ node: string; outcome: string; message: string }> }>;
    assert.equal(r?.ok, true);
    assert.equal(r?.image_id, IMAGE);
    // Every layer-window of the image's container, the writable layer's too (the agent scores them all); not the other image's.
    assert.equal(r?.windows, 450);
    assert.match(r?.backend ?? "", /^(wasm|cpu|node)$/);
    assert.ok((r?.calibration_p995 ?? 0) > 0);
    assert.equal(r?.file, join(out, `image-${IMAGE.slice(7, 19)}-${(r?.version ?? "").replace(/[^A-Za-z0-9._-]/g, "-")}.json`));
    assert.deepEqual(await readdir(out), [r?.file.slice(out.length + 1)]);
    const a = parseArtifact(await readFile(r?.file ?? ""));
    assert.deepEqual(a.manifest.scope, { kind: "image", imageId: IMAGE });
    assert.equal(a.manifest.version, r?.version);
    assert.match(stderr, /epoch 1\/3 {2}loss /);
    assert.match(stderr, /210 windows read from /);
    assert.deepEqual(r?.deployments.map((d) => [d.node, d.outcome]), [[NODE, "loaded"]]);
    const sent = agent.commands.filter((c) => c.action.case === "modelUpdate");
    assert.equal(sent.length, 1);
    assert.ok(sent[0]?.action.case === "modelUpdate" && sent[0].action.value.version === r?.version && sent[0].action.value.imageId === IMAGE);
  });

  it("prints a summary per model and says why the others were not trained: too few windows, an unknown image", async () => {
    const err = await run("--from-file", join(dir.path, "windows.jsonl"), "--image", "web", "--image", "api", "--image", "nosuch", "--epochs", "2", "--out", join(dir.path, "more"), "--aggregator", address, "--insecure").then(
      () => assert.fail("exits non-zero when a model is not trained"),
      (e: { stdout: string; stderr: string }) => e,
    );
    assert.match(err.stdout, new RegExp(`image ${IMAGE} \\(web\\): model \\S+`));
    assert.match(err.stdout, /450 windows, backend (wasm|cpu|node), calibration p99\.5 [0-9.e+-]+, final loss [0-9.e+-]+, trained in [0-9.]+ s/);
    assert.match(err.stdout, /written to .*image-333333333333-/);
    assert.match(err.stdout, /image api: not trained: too few windows for image sha256:4{64}: 180 layer-windows of feature version layer-window-v2 in .*windows\.jsonl \(200 needed\)/);
    assert.match(err.stdout, /image nosuch: not trained: unknown image "nosuch"/);
    assert.match(err.stderr, /2 of 3 models not trained/);
  });

  it("refuses a bad file by its line, and says when the aggregator is down", async () => {
    await assert.rejects(run("--from-file", join(dir.path, "bad.jsonl"), "--generic", "--out", join(dir.path, "x")), (e: { stderr: string }) => /bad\.jsonl:3: layers is not an array/.test(e.stderr));
    await assert.rejects(run("--since", "1h", "--generic", "--aggregator", "127.0.0.1:1", "--insecure"), (e: { stderr: string }) => /the aggregator at 127\.0\.0\.1:1 is not answering/.test(e.stderr));
  });
});
