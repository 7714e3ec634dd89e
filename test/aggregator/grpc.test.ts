/**
 * The aggregator over real gRPC and a real level store: mTLS refusals, malformed input,
 * survival across a restart, and commands answered UNIMPLEMENTED by a real agent link.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AgentMessageSchema, AgentService, CommandStatus, HelloSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { AggregatorLink } from "../../agent/link/aggregator-link.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { initCerts, loadTls, type TlsMaterial } from "../../common/certs.js";
import { callBidi, callUnary, channelCredentials, makeClient, methodPath } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { waitFor } from "../harness/engine.js";
import { refusedWhileServed, tlsProbe } from "./tls-refusal.js";

function graph(id: string, node: string, name: string): LayerGraph {
  return create(LayerGraphSchema, {
    containerId: id,
    containerName: name,
    node,
    state: "running",
    image: "example/app:1",
    layers: [
      { layerId: `sha256:${"a".repeat(64)}`, name: "base", kind: LayerKind.IMAGE, index: 0 },
      { layerId: `rw:${id}`, name: "rw", kind: LayerKind.WRITABLE, dependencies: [`sha256:${"a".repeat(64)}`] },
    ],
  });
}

describe("aggregator gRPC", () => {
  let dir: string;
  let tlsDir: string;
  let agg: RunningAggregator;
  let address: string;
  let clientTls: TlsMaterial;
  const log = silentLogger();
  const links: AggregatorLink[] = [];

  const start = async (listen = "127.0.0.1:0") => {
    agg = await startAggregator({ dataDir: dir, listen, http: "127.0.0.1:0", tls: await loadTls(tlsDir, { role: "aggregator" }), log });
    address = `127.0.0.1:${agg.port}`;
  };

  const link = async (node: string, graphs: LayerGraph[]) => {
    const l = new AggregatorLink({
      address,
      tls: await loadTls(tlsDir, { role: "agent", node }),
      hello: () => create(HelloSchema, { node, agentVersion: "test" }),
      snapshot: () => graphs,
      log,
      metrics: new AgentMetrics(),
    });
    links.push(l);
    return l;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-agg-"));
    tlsDir = join(dir, "tls");
    await initCerts(tlsDir, { nodes: ["node-a", "node-b"] });
    clientTls = await loadTls(tlsDir, { role: "reader" });
    await start();
  });
  after(async () => {
    for (const l of links) l.stop();
    await agg.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves a client with a certificate from its CA", async () => {
    const c = makeClient(QueryService, address, channelCredentials(clientTls));
    const res = await callUnary(c, QueryService.method.listContainers, {});
    assert.deepEqual(res.containers, []);
    c.close();
  });

  it("serves gRPC health, server reflection and Prometheus metrics", async () => {
    const c = makeClient(QueryService, address, channelCredentials(clientTls));
    // grpc.health.v1.HealthCheckRequest{service: ""} is empty; SERVING is status = 1 (bytes 08 01).
    const health = await new Promise<Buffer>((resolve, reject) => {
      c.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), (err, res) => (err || !res ? reject(err) : resolve(res)));
    });
    assert.deepEqual([...health], [0x08, 0x01]);
    // ServerReflectionRequest{list_services: ""} is field 7, length 0.
    const listed = await new Promise<string>((resolve, reject) => {
      const call = c.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", (b: Buffer) => b, (b: Buffer) => b);
      call.on("data", (b: Buffer) => {
        resolve(b.toString("latin1"));
        call.cancel();
      });
      call.on("error", (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? undefined : reject(err)));
      call.write(Buffer.from([0x3a, 0x00]));
    });
    for (const svc of ["shadowlayer.v1.AgentService", "shadowlayer.v1.QueryService", "grpc.health.v1.Health"]) assert.ok(listed.includes(svc), `reflection lists ${svc}`);
    c.close();
    const metrics = await (await fetch(`http://127.0.0.1:${agg.httpPort}/metrics`)).text();
    assert.match(metrics, /shadowlayer_aggregator_graphs \d+/);
    assert.equal((await fetch(`http://127.0.0.1:${agg.httpPort}/healthz`)).status, 200);
  });

  const list = (c: grpc.Client) => () => callUnary(c, QueryService.method.listContainers, {}, { deadlineMs: 3000 });

  it("refuses a client without a certificate", async () => {
    const bad = makeClient(QueryService, address, grpc.credentials.createSsl(clientTls.ca));
    const good = makeClient(QueryService, address, channelCredentials(clientTls));
    const err = await refusedWhileServed(list(bad), list(good));
    // The server's TLS alert 116 (certificate required), not a refused or dropped connection.
    assert.match(err.details, /certificate required/);
    bad.close();
    good.close();
  });

  it("refuses a client whose certificate comes from another CA", async () => {
    const other = join(dir, "other-ca");
    await initCerts(other, { nodes: ["node-a"] });
    const foreign = await loadTls(other, { role: "reader" });
    // Trusts our aggregator, but presents a certificate our CA never signed.
    const bad = makeClient(QueryService, address, grpc.credentials.createSsl(clientTls.ca, foreign.key, foreign.cert));
    const good = makeClient(QueryService, address, channelCredentials(clientTls));
    await refusedWhileServed(list(bad), list(good));
    bad.close();
    good.close();
    // Below gRPC: the TLS handshake with the foreign certificate is cut before the server says a
    // word of HTTP/2, where the same handshake with our certificate gets the server's SETTINGS.
    assert.equal((await tlsProbe(agg.port, clientTls.ca, foreign)).served, false);
    assert.equal((await tlsProbe(agg.port, clientTls.ca, clientTls)).served, true);
  });

  it("answers malformed requests with INVALID_ARGUMENT", async () => {
    const c = makeClient(QueryService, address, channelCredentials(clientTls));
    await assert.rejects(callUnary(c, QueryService.method.getLayerGraph, { container: "" }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT);
    await assert.rejects(callUnary(c, QueryService.method.getLayerGraph, { container: "../../etc" }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT);
    await assert.rejects(callUnary(c, QueryService.method.getLayerGraph, { container: "abcd1234" }), (err: grpc.ServiceError) => err.code === grpc.status.NOT_FOUND);
    // Bytes that are not a protobuf message at all (field 1, wire type 7 does not exist).
    const raw = await new Promise<grpc.ServiceError | null>((resolve) => {
      c.makeUnaryRequest(methodPath(QueryService.method.getLayerGraph), (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x0f, 0xff, 0xff]), (err) => resolve(err));
    });
    assert.equal(raw?.code, grpc.status.INVALID_ARGUMENT);
    c.close();
  });

  it("refuses an agent stream that opens without hello, or speaks for another node", async () => {
    const tlsA = await loadTls(tlsDir, { role: "agent", node: "node-a" });
    const c = makeClient(AgentService, address, channelCredentials(tlsA));
    const failWith = (msgs: MessageInitShape<typeof AgentMessageSchema>[]) =>
      new Promise<grpc.ServiceError>((resolve) => {
        const call = callBidi(c, AgentService.method.connect);
        call.on("error", resolve);
        call.on("data", () => undefined);
        for (const m of msgs) call.write(create(AgentMessageSchema, m));
      });
    const noHello = await failWith([{ seq: 1n, body: { case: "graphDelete", value: { containerId: "x" } } }]);
    assert.equal(noHello.code, grpc.status.INVALID_ARGUMENT);
    const otherNode = await failWith([{ seq: 1n, body: { case: "hello", value: { node: "node-b" } } }]);
    assert.equal(otherNode.code, grpc.status.PERMISSION_DENIED);
    const badGraph = await failWith([
      { seq: 1n, body: { case: "hello", value: { node: "node-a" } } },
      { seq: 2n, body: { case: "graphUpsert", value: { graph: graph("not-an-id", "node-a", "x") } } },
    ]);
    assert.equal(badGraph.code, grpc.status.INVALID_ARGUMENT);
    c.close();
    // A CLI certificate may read but not publish.
    const cli = makeClient(AgentService, address, channelCredentials(clientTls));
    const asCli = await new Promise<grpc.ServiceError>((resolve) => {
      const call = callBidi(cli, AgentService.method.connect);
      call.on("error", resolve);
      call.on("data", () => undefined);
      call.write(create(AgentMessageSchema, { seq: 1n, body: { case: "hello", value: { node: "shadowlayer-cli" } } }));
    });
    assert.equal(asCli.code, grpc.status.PERMISSION_DENIED);
    cli.close();
  });

  it("stores an agent's graphs, answers commands UNIMPLEMENTED, and still answers after a restart", async () => {
    const id = "b".repeat(64);
    const l = await link("node-a", [graph(id, "node-a", "web-1")]);
    l.start();
    await l.waitSynced();
    const c = makeClient(QueryService, address, channelCredentials(clientTls));
    const got = await waitFor("graph stored", async () => (await callUnary(c, QueryService.method.listContainers, {})).containers.find((x) => x.containerId === id));
    assert.equal(got.containerName, "web-1");
    assert.equal((await callUnary(c, QueryService.method.getLayerGraph, { container: "web-1" })).containerId, id);
    assert.equal((await callUnary(c, QueryService.method.getLayerGraph, { container: id.slice(0, 6) })).containerId, id);

    const result = await agg.ingest.sendCommand("node-a", { id: "cmd-1", action: { case: "prepareShadow", value: { containerId: id, shadowImage: "x@sha256:1" } } });
    assert.equal(result.status, CommandStatus.UNIMPLEMENTED);
    assert.equal(result.commandId, "cmd-1");
    assert.match(result.message, /prepareShadow/);
    const again = await agg.ingest.sendCommand("node-a", { id: "cmd-1", action: { case: "switchover", value: { containerId: id } } });
    assert.equal(again.message, result.message, "a repeated command id gets the first answer");

    l.stop();
    c.close();
    await agg.stop();
    await start();
    const c2 = makeClient(QueryService, address, channelCredentials(clientTls));
    const after = await callUnary(c2, QueryService.method.getLayerGraph, { container: id });
    assert.equal(after.containerName, "web-1");
    assert.deepEqual(after.layers.map((x) => x.layerId), [`sha256:${"a".repeat(64)}`, `rw:${id}`]);
    c2.close();
  });

  it("lets an agent work on while the aggregator is down and catches up on reconnect", async () => {
    const port = agg.port;
    const graphs = [graph("c".repeat(64), "node-b", "one")];
    const l = await link("node-b", graphs);
    l.start();
    await l.waitSynced();
    await agg.stop();
    await waitFor("link notices", () => (l.connected ? undefined : true));
    // While the aggregator is down, the agent's state changes.
    graphs.push(graph("d".repeat(64), "node-b", "two"));
    graphs.shift();
    await start(`127.0.0.1:${port}`);
    // Synced again: the aggregator has acked the link's new full sync (hello, graphs, syncComplete).
    await waitFor("link resynced", () => (l.connected ? true : undefined), 15_000, 50);
    const c = makeClient(QueryService, address, channelCredentials(clientTls));
    const names = (await callUnary(c, QueryService.method.listContainers, { node: "node-b" })).containers.map((x) => x.containerName);
    assert.deepEqual(names, ["two"], "the container removed while down is gone, the new one is there");
    c.close();
    l.stop();
  });
});
