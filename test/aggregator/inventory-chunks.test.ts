/**
 * An image of 60,000 dpkg packages (about 12 MB of inventory, three times the message limit)
 * reaches a real aggregator over mTLS in chunks and is stored whole; a half-sent inventory never
 * replaces the last complete one; every chunk passes the node-scope check.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { AgentService, HelloSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { ImageInventorySchema, type ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { AggregatorLink } from "../../agent/link/aggregator-link.js";
import { MESSAGE_LIMIT_BYTES } from "../../agent/link/message-caps.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { waitFor } from "../harness/engine.js";

const IMAGE = `sha256:${"e".repeat(64)}`;
const LAYER = `sha256:${"a".repeat(64)}`;
const PACKAGES = 60_000;

function graph(containerId: string, node: string): LayerGraph {
  return create(LayerGraphSchema, {
    containerId,
    containerName: `app-${node}`,
    node,
    state: "running",
    image: "example/big:1",
    imageId: IMAGE,
    layers: [{ layerId: LAYER, name: "base", kind: LayerKind.IMAGE, index: 0 }],
  });
}

/** What a Debian-style image with 60,000 packages in its dpkg status reads as. */
function bigInventory(): ImageInventory {
  return create(ImageInventorySchema, {
    imageId: IMAGE,
    layerIds: [LAYER],
    os: { id: "debian", versionId: "12" },
    scannedAt: timestampNow(),
    packages: Array.from({ length: PACKAGES }, (_, i) => ({
      type: "deb",
      name: `libgenerated-package-number-${i}`,
      version: `1:2.${i}.0-1+deb12u1~bookworm-security-backport`,
      sourceName: `generated-source-${Math.floor(i / 4)}`,
      sourceVersion: `2.${i}.0-1+deb12u1`,
      path: "var/lib/dpkg/status",
      layerId: LAYER,
    })),
  });
}

describe("an inventory three times the message limit", () => {
  let dir: string;
  let agg: RunningAggregator;
  const links: AggregatorLink[] = [];

  const clients: grpc.Client[] = [];
  const streams: AgentStream[] = [];
  const stream = async (node: string) => {
    const c = makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(join(dir, "tls"), { role: "agent", node })));
    clients.push(c);
    const s = await connectAgent(c, node);
    streams.push(s);
    return s;
  };

  const refusedInventories = async () => {
    const m = agg.metrics.registry.getSingleMetric("shadowlayer_aggregator_refused_writes_total");
    return (await m?.get())?.values.find((v) => v.labels.kind === "inventory")?.value ?? 0;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-chunks-"));
    await initCerts(join(dir, "tls"), { nodes: ["node-a", "node-b"] });
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(join(dir, "tls"), { role: "aggregator" }), log: silentLogger() });
  });
  after(async () => {
    for (const l of links) l.stop();
    for (const s of streams) s.close();
    for (const c of clients) c.close();
    await agg.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("goes in chunks and is stored whole, without a reconnect", async () => {
    const inv = bigInventory();
    assert.ok(toBinary(ImageInventorySchema, inv).length > 3 * MESSAGE_LIMIT_BYTES - 1_000_000, "about 12 MB in one piece");
    const metrics = new AgentMetrics();
    const l = new AggregatorLink({
      address: `127.0.0.1:${agg.port}`,
      tls: await loadTls(join(dir, "tls"), { role: "agent", node: "node-a" }),
      hello: () => create(HelloSchema, { node: "node-a", agentVersion: "test" }),
      snapshot: () => [graph("a".repeat(64), "node-a")],
      inventories: () => [inv],
      log: silentLogger(),
      metrics,
    });
    links.push(l);
    l.start();
    await l.waitSynced();
    const stored = await waitFor("the whole inventory stored", () => agg.scores.inventoryOfNode(IMAGE, "node-a"));
    assert.equal(stored.packages.length, PACKAGES);
    assert.deepEqual(stored.packages.at(-1), inv.packages.at(-1));
    assert.equal(stored.chunkCount, 0, "stored as one inventory, not as a chunk");
    const sent = (await metrics.messagesSent.get()).values.find((v) => v.labels.kind === "inventory")?.value ?? 0;
    assert.ok(sent >= 12, `sent as ${sent} chunks`);
    assert.equal(l.status().reconnects, 0n);
    assert.equal(l.status().droppedOversize, 0n);
  });

  it("keeps the last complete inventory when a newer one stops half-way", async () => {
    const s = await stream("node-a");
    const chunk = (i: number, name: string) => create(ImageInventorySchema, { imageId: IMAGE, layerIds: [LAYER], chunkIndex: i, chunkCount: 3, generation: "g-half", packages: [{ type: "deb", name, version: "1", layerId: LAYER }] });
    await s.send({ case: "inventory", value: chunk(0, "only-one") });
    await s.send({ case: "inventory", value: chunk(1, "only-two") });
    s.close();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(agg.scores.inventoryOfNode(IMAGE, "node-a")?.packages.length, PACKAGES, "the half-sent one did not replace it");

    // Out of order: refused, and the assembly is given up.
    const t = await stream("node-a");
    const before = await refusedInventories();
    await t.send({ case: "inventory", value: chunk(0, "x") });
    await t.send({ case: "inventory", value: chunk(2, "z") });
    await t.send({ case: "inventory", value: chunk(1, "y") });
    assert.equal(await refusedInventories(), before + 2);
    assert.equal(agg.scores.inventoryOfNode(IMAGE, "node-a")?.packages.length, PACKAGES);
    t.close();
  });

  it("checks every chunk against the node's scope", async () => {
    // node-b runs a container of the image only after its first chunk.
    const b = await stream("node-b");
    const chunk = (i: number) => create(ImageInventorySchema, { imageId: IMAGE, layerIds: [LAYER], chunkIndex: i, chunkCount: 2, generation: "g-b", packages: [{ type: "deb", name: `b${i}`, version: "1", layerId: LAYER }] });
    const before = await refusedInventories();
    await b.send({ case: "inventory", value: chunk(0) });
    await b.send({ case: "graphUpsert", value: { graph: graph("b".repeat(64), "node-b") } });
    await b.send({ case: "inventory", value: chunk(1) });
    assert.equal(await refusedInventories(), before + 2, "the refused first chunk leaves nothing for the second to complete");
    assert.equal(agg.scores.inventoryOfNode(IMAGE, "node-b"), undefined);
    // Sent whole in chunks while in scope, it is stored.
    await b.send({ case: "inventory", value: chunk(0) });
    await b.send({ case: "inventory", value: chunk(1) });
    assert.deepEqual(agg.scores.inventoryOfNode(IMAGE, "node-b")?.packages.map((p) => p.name), ["b0", "b1"]);
    b.close();
  });
});
