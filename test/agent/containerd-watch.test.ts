/**
 * An agent reading containerd (`runtime: "containerd"`) and a real aggregator over mTLS: a pod
 * started over CRI after the agent is up shows in WatchGraphs within 1 s, with its pod and
 * namespace; removed (StopPodSandbox + RemovePodSandbox, the kubelet's way), it disappears within
 * 1 s. The pod's sandbox never shows.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { GraphEvent_Type, QueryService, type GraphEvent } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { callServerStream, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { waitFor } from "../harness/engine.js";
import { releaseContainerd, removePod, runPod, testContainerd, type TestContainerd } from "../harness/containerd.js";

const NODE = "ctrd-watch-node";

describe("containerd agent → aggregator → WatchGraphs", () => {
  let dir: string;
  let ctd: TestContainerd;
  let agg: RunningAggregator | undefined;
  let agent: RunningAgent | undefined;
  let client: grpc.Client | undefined;
  let stream: grpc.ClientReadableStream<GraphEvent> | undefined;
  const events: Array<{ at: number; ev: GraphEvent }> = [];

  before(async () => {
    ctd = await testContainerd();
    dir = await mkdtemp(join(tmpdir(), "sl-ctrd-watch-"));
    const tls = join(dir, "tls");
    await initCerts(tls, { nodes: [NODE] });
    agg = await startAggregator({ dataDir: dir, listen: "127.0.0.1:0", tls: await loadTls(tls, { role: "aggregator" }), log: silentLogger() });
    agent = await startAgent({
      node: NODE,
      runtime: "containerd",
      containerdSocket: ctd.socket,
      containerdNamespace: ctd.namespace,
      aggregator: `127.0.0.1:${agg.port}`,
      tls: await loadTls(tls, { role: "agent", node: NODE }),
      refreshMs: 2000,
      http: "127.0.0.1:0",
      execSource: "proc",
      anomaly: { enabled: false },
      log: silentLogger(),
    });
    await agent.link?.waitSynced();
    client = makeClient(QueryService, `127.0.0.1:${agg.port}`, channelCredentials(await loadTls(tls, { role: "reader" })));
    stream = callServerStream(client, QueryService.method.watchGraphs, {});
    stream.on("data", (ev: GraphEvent) => events.push({ at: Date.now(), ev }));
    stream.on("error", () => undefined);
    await waitFor("snapshot", () => events.some((e) => e.ev.type === GraphEvent_Type.SNAPSHOT_DONE));
  });

  after(async () => {
    stream?.cancel();
    client?.close();
    await agent?.stop();
    await agg?.stop();
    await releaseContainerd();
    await rm(dir, { recursive: true, force: true });
  });

  it("reads containerd", () => {
    assert.equal(agent?.runtime.kind, "containerd");
    assert.equal(agent?.runtime.driver, "overlayfs");
  });

  it("shows a new pod's container within 1 s and drops it within 1 s of the pod's removal", async (t) => {
    const name = `watch-${process.pid}`;
    const pod = await runPod({ name, namespace: "team-watch", image: ctd.appImage, command: ["/opt/app/bin/busybox", "sleep", "600"] });
    // Measured from the moment CRI has started it (StartContainer returned).
    const t0 = Date.now();
    const seen = await waitFor("upsert", () => events.find((e) => e.ev.type === GraphEvent_Type.UPSERT && e.ev.containerId === pod.containerId && e.ev.graph?.state === "running"), 5000, 10);
    assert.ok(seen.at - t0 <= 1000, `running pod container appeared ${seen.at - t0} ms after start`);
    assert.equal(seen.ev.graph?.node, NODE);
    assert.equal(seen.ev.graph?.runtime, "containerd");
    assert.equal(seen.ev.graph?.pod, name);
    assert.equal(seen.ev.graph?.namespace, "team-watch");
    assert.equal(seen.ev.graph?.podUid, pod.uid);
    assert.ok((seen.ev.graph?.layers.length ?? 0) >= 5, "four image layers and the writable one");
    assert.ok(!events.some((e) => e.ev.containerId === pod.podId), "the sandbox is never a graph");

    const t1 = Date.now();
    await removePod(pod.podId);
    const gone = await waitFor("delete", () => events.find((e) => e.ev.type === GraphEvent_Type.DELETE && e.ev.containerId === pod.containerId), 5000, 10);
    assert.ok(gone.at - t1 <= 1000, `disappeared ${gone.at - t1} ms after the removal began`);
    t.diagnostic(`appeared after ${seen.at - t0} ms, disappeared after ${gone.at - t1} ms`);
  });
});
