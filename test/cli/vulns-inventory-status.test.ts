/**
 * `vulns` says whether the image's inventory is in, so a script can tell "no vulnerabilities"
 * from "not scanned yet": a real aggregator, fed over the agent stream, answers pending before
 * the inventory arrives, partial for an inventory with unread parts, scanned for a whole one;
 * `--json` carries it as `inventory_status`, the table says it in words.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AgentMessageSchema, AgentService, type AgentMessage, type AggregatorMessage } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { ImageInventorySchema, InventoryProblemSchema, PackageSchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { callBidi, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, "dist/cli/main.js");
const NODE = "status-node";
const CONTAINER = "c".repeat(64);
const IMAGE = `sha256:${"d".repeat(64)}`;
const LAYER = `sha256:${"a".repeat(64)}`;

describe("vulns says whether the image's inventory is scanned, pending or partial", () => {
  let dir: string;
  let agg: RunningAggregator;
  let client: grpc.Client;
  let stream: grpc.ClientDuplexStream<AgentMessage, AggregatorMessage>;
  let seq = 0n;
  let acked = 0n;
  const ackWaiters: Array<() => void> = [];

  /** Writes one agent message and resolves once the aggregator has acked it (it is stored then). */
  const send = (body: NonNullable<MessageInitShape<typeof AgentMessageSchema>["body"]>) => {
    const mine = ++seq;
    stream.write(create(AgentMessageSchema, { seq: mine, body }));
    return new Promise<void>((resolve) => {
      const check = () => (acked >= mine ? (resolve(), true) : false);
      if (!check()) ackWaiters.push(() => void check());
    });
  };

  const vulns = async (...extra: string[]) => (await run(process.execPath, [CLI, "vulns", CONTAINER.slice(0, 12), ...extra, "--aggregator", `127.0.0.1:${agg.port}`, "--insecure"])).stdout;
  const status = async () => (JSON.parse(await vulns("--json")) as { inventory_status: string; partial: Array<{ reason: string }>; packages: number });

  const inventory = (partial: boolean) =>
    create(ImageInventorySchema, {
      imageId: IMAGE,
      layerIds: [LAYER],
      packages: [create(PackageSchema, { type: "npm", name: "left-pad", version: "1.3.0", path: "/usr/lib/node_modules/left-pad/package.json", layerId: LAYER })],
      partial: partial ? [create(InventoryProblemSchema, { layerId: LAYER, path: "/usr/lib/node_modules", reason: "search stopped: per-image budget of 1000 directory entries spent" })] : [],
    });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-vulns-status-"));
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    client = makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials("insecure"));
    stream = callBidi(client, AgentService.method.connect);
    stream.on("data", (m: AggregatorMessage) => {
      if (m.body.case !== "ack") return;
      if (m.body.value.seq > acked) acked = m.body.value.seq;
      for (const w of ackWaiters.splice(0)) w();
    });
    stream.on("error", () => undefined);
    await send({ case: "hello", value: { node: NODE, agentVersion: "test" } });
    await send({
      case: "graphUpsert",
      value: {
        graph: create(LayerGraphSchema, {
          containerId: CONTAINER,
          containerName: "status-app",
          node: NODE,
          state: "running",
          image: "example/status:1",
          imageId: IMAGE,
          layers: [{ layerId: LAYER, name: "base", kind: LayerKind.IMAGE, index: 0 }],
        }),
      },
    });
  });
  after(async () => {
    stream?.cancel();
    client?.close();
    await agg?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("pending before the agent reports the image's inventory", async () => {
    const r = await status();
    assert.equal(r.inventory_status, "pending");
    assert.equal(r.packages, 0);
    assert.match(await vulns(), /inventory: pending \(the agent has not reported this image's packages yet\)/);
  });

  it("partial when the inventory has parts not read", async () => {
    await send({ case: "inventory", value: inventory(true) });
    const r = await status();
    assert.equal(r.inventory_status, "partial");
    assert.deepEqual(r.partial.map((p) => p.reason), ["search stopped: per-image budget of 1000 directory entries spent"]);
    assert.match(await vulns(), /inventory: partial \(1 packages; 1 part\(s\) not read, see notes\)/);
  });

  it("scanned when the inventory is whole", async () => {
    await send({ case: "inventory", value: inventory(false) });
    const r = await status();
    assert.equal(r.inventory_status, "scanned");
    assert.equal(r.packages, 1);
    assert.match(await vulns(), /inventory: scanned \(1 packages\)/);
  });
});
