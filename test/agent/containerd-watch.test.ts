/**
 * An agent reading containerd (`runtime: "containerd"`) and a real aggregator over mTLS: a pod
 * started over CRI after the agent is up shows in WatchGraphs within 1 s, with its pod and
 * namespace; removed (StopPodSandbox + RemovePodSandbox, the kubelet's way), it disappears within
 * 1 s. The pod's sandbox never shows. Telemetry and inventory work on top unchanged: a pod's
 * process's CPU lands on its layer in windows at the aggregator, and the image's packages are read
 * from containerd's snapshot directories.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { GraphEvent_Type, QueryService, type GraphEvent } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { LayerKind } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { callServerStream, callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
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
      // The spool (level) is what the telemetry goes out through.
      dataDir: join(dir, "agent"),
      refreshMs: 2000,
      sampleMs: 250,
      windowMs: 1000,
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

  it("samples a pod's processes into windows by layer, and reads its image's packages from the snapshots", async () => {
    const pod = await runPod({ name: `tele-${process.pid}`, namespace: "team-watch", image: ctd.appImage, command: ["/opt/app/bin/busybox", "sh", "-c", "while :; do :; done"] });
    try {
      // The graph may first show the container before its task's processes are listed (an event
      // ahead of a refresh): wait for the one that places the loop.
      const onLayer = (l: { processes: Array<{ exe: string }> }) => l.processes.some((p) => p.exe === "/opt/app/bin/busybox");
      const g = await waitFor("the busy loop's process on a layer of the graph", () => {
        const x = agent?.collector.get(pod.containerId);
        return x?.layers.some(onLayer) === true ? x : undefined;
      }, 10_000, 20);
      // busybox runs from the image's COPY layer (the third): its CPU is charged there.
      const copyLayer = g.layers.find(onLayer)?.layerId;
      assert.ok(copyLayer?.startsWith("sha256:"), `the busy loop's process is on an image layer, not ${g.layers.find(onLayer)?.kind}`);
      const c = client;
      assert.ok(c !== undefined);
      let seen: string[] = [];
      const cpu = await waitFor(
        "a window with the loop's CPU on its layer",
        async () => {
          const r = await callUnary(c, QueryService.method.listWindows, { node: NODE, container: pod.containerId, limit: 20 });
          seen = r.windows.map((w) => (w.window?.layers ?? []).map((l) => `${l.layerId.slice(7, 15)}:${l.cpuSeconds}/${l.processes}`).join(" "));
          const layer = r.windows.flatMap((w) => w.window?.layers ?? []).find((l) => l.layerId === copyLayer && l.cpuSeconds > 0.1);
          return layer?.cpuSeconds;
        },
        15_000,
        200,
      ).catch((e: unknown) => {
        throw new Error(`${String(e)}; the loop is on ${copyLayer?.slice(7, 15)}; windows at the aggregator (layer:cpu/processes): ${seen.join(" | ") || "none"}`);
      });
      assert.ok(cpu > 0.1, `${cpu} CPU-seconds in a 1 s window on the loop's layer`);
      const inv = await waitFor("the image's inventory", () => agent?.inventory?.all().find((i) => i.imageId === ctd.appImageId), 15_000, 100);
      assert.deepEqual(inv.layerIds, g.layers.filter((l) => l.kind === LayerKind.IMAGE).map((l) => l.layerId), "packages attributed over the image's layers");
      const libc = inv.packages.find((p) => p.name === "libc6");
      assert.ok(libc !== undefined, "libc6 from the dpkg database in the snapshot directories");
      assert.ok(g.layers.some((l) => l.layerId === libc.layerId), "on one of the image's layers");
    } finally {
      await removePod(pod.podId);
    }
  });
});
