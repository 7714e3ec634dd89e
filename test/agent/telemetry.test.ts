/**
 * Telemetry on a real engine: per-layer CPU and memory from processes started out of a middle
 * image layer, drift detections from eBPF (a dropped binary living a few milliseconds) and from
 * /proc polling (eBPF forced off), and the spool across an aggregator outage.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { ebpfUnavailableReason } from "../../agent/telemetry/exec-ebpf.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/server.js";
import { silentLogger } from "../../common/log.js";
import { decodeFeatures, featureIndex } from "../../models/features.js";
import type { Detection, WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { cleanupContainers, execDetached, execFileP, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

/** A layer's decoded feature vector (empty when the layer is absent). */
const feat = (l: { featuresF64le: Uint8Array } | undefined): number[] => (l === undefined ? [] : decodeFeatures(l.featuresF64le));
const CPU_SUM = featureIndex("cpu_seconds.sum");
const CPU_RATE = featureIndex("cpu_seconds.rate");
const RSS_MAX = featureIndex("rss_bytes.max");

/** eBPF must work on the test host: test/harness/docker-host.sh installs bpftrace and mounts tracefs. */
function requireEbpf(): void {
  const why = ebpfUnavailableReason();
  if (why !== undefined) assert.fail(`eBPF is not usable on this test host (${why})`);
}

async function imageLayers(image: string): Promise<string[]> {
  const { stdout } = await execFileP("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", image]);
  return JSON.parse(stdout) as string[];
}

describe("telemetry attributed to layers (real containers)", () => {
  let eng: TestEngine;
  let dir: string;
  let aggregator: RunningAggregator;
  let agent: RunningAgent;
  const windows: WindowSummary[] = [];
  const detections: Detection[] = [];

  before(async () => {
    requireEbpf();
    eng = await testEngine();
    dir = await mkdtemp(join(tmpdir(), "sl-telemetry-"));
    aggregator = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    agent = await startAgent({
      node: "telemetry-node",
      aggregator: `127.0.0.1:${aggregator.port}`,
      tls: "insecure",
      dataDir: join(dir, "agent"),
      sampleMs: 250,
      windowMs: 2000,
      refreshMs: 1000,
      log: silentLogger(),
    });
    agent.telemetry.on("window", (w) => windows.push(w));
    agent.telemetry.on("detection", (d) => detections.push(d));
  });
  after(async () => {
    await agent?.stop();
    await aggregator?.stop();
    await cleanupContainers(eng.docker);
    await rm(dir, { recursive: true, force: true });
  });

  async function running(c: Docker.Container): Promise<void> {
    await waitFor("container in the graph", () => agent.collector.container(c.id)?.pid ?? undefined);
  }

  function windowsOf(id: string, since: number): WindowSummary[] {
    return windows.filter((w) => w.containerId === id && (w.end?.seconds ?? 0n) * 1000n >= BigInt(since));
  }

  it("a CPU burner started from the middle layer raises that layer's CPU features and no other's", async () => {
    const layers = await imageLayers(eng.app);
    const middle = layers[2] ?? "";
    const c = await runContainer(eng.docker, eng.app, ["/bin/sleep", "600"]);
    await running(c);
    const t0 = Date.now();
    await execDetached(c, ["/opt/app/bin/busybox", "sh", "-c", "while :; do :; done"]);
    const w = await waitFor(
      "a window with the burner",
      () => windowsOf(c.id, t0 + 1000).find((x) => (feat(x.layers.find((l) => l.layerId === middle))[CPU_RATE] ?? 0) > 0.3),
      20_000,
      100,
    );
    const byLayer = new Map(w.layers.map((l) => [l.layerId, l]));
    const mid = byLayer.get(middle);
    assert.ok(mid !== undefined);
    // The plain field repeats the vector's sum; one busy shell loop cannot burn more than one CPU.
    assert.equal(mid.cpuSeconds, feat(mid)[CPU_SUM]);
    assert.ok((feat(mid)[CPU_RATE] ?? 0) <= 1.25, `one busy loop at ${feat(mid)[CPU_RATE]} CPUs`);
    assert.ok(mid.processes >= 1, "the burner is counted on the middle layer");
    for (const [id, l] of byLayer) {
      if (id === middle) continue;
      assert.ok((feat(l)[CPU_RATE] ?? 0) < 0.05, `layer ${id} (${l.layerName}) should be idle, has CPU rate ${feat(l)[CPU_RATE]}`);
    }
    // The base layer runs `sleep` (PID 1): present, idle.
    assert.ok((byLayer.get(layers[0] ?? "")?.processes ?? 0) >= 1, "the base layer's sleep is counted");
    // The container's cgroup counter, read apart from the processes' /proc stat, agrees with the
    // layers over the same ticks (a little more: `docker exec` itself runs in the cgroup).
    const cg = w.cgroup?.cpuSeconds;
    assert.ok(cg?.available === true, `cgroup CPU ${JSON.stringify(cg)}`);
    const layersCpu = w.layers.reduce((n, l) => n + l.cpuSeconds, 0);
    assert.ok((cg.value ?? 0) >= layersCpu * 0.75 && (cg.value ?? 0) <= layersCpu * 1.25 + 0.1, `cgroup ${cg.value} s against the layers' ${layersCpu} s`);
    // Host network: counters are the host's and are marked shared, not attributed.
    assert.equal(w.net?.shared, true);
    assert.equal(w.net?.rxBytes?.available, false);
  });

  it("a memory-allocating process raises RSS on its layer only", async () => {
    const layers = await imageLayers(eng.app);
    const middle = layers[2] ?? "";
    const c = await runContainer(eng.docker, eng.app, ["/bin/sleep", "600"]);
    await running(c);
    const t0 = Date.now();
    // dd fills a 64 MiB buffer from /dev/zero and then blocks writing it to a pipe nobody reads.
    await execDetached(c, ["/opt/app/bin/busybox", "sh", "-c", "/opt/app/bin/busybox dd if=/dev/zero bs=64M count=1 | /opt/app/bin/busybox sleep 600"]);
    const w = await waitFor(
      "a window with the allocation",
      () => windowsOf(c.id, t0 + 500).find((x) => (feat(x.layers.find((l) => l.layerId === middle))[RSS_MAX] ?? 0) > 60 * 2 ** 20),
      20_000,
      100,
    );
    const base = w.layers.find((l) => l.layerId === layers[0]);
    assert.ok((feat(base)[RSS_MAX] ?? 0) < 8 * 2 ** 20, `base layer RSS ${feat(base)[RSS_MAX]}`);
    const mid = w.layers.find((l) => l.layerId === middle);
    assert.equal(mid?.rssBytes, feat(mid)[RSS_MAX], "the plain field repeats the vector's peak");
    assert.ok((w.cgroup?.memoryBytes?.value ?? 0) > 60 * 2 ** 20, "the cgroup's memory agrees");
  });

  it("eBPF: a dropped binary that lives a few milliseconds is a drift detection on rw:<id>", async () => {
    assert.equal(agent.telemetry.activeExecSource, "ebpf", `exec source is ${agent.telemetry.status().execSourceReason}`);
    const c = await runContainer(eng.docker, eng.app, ["/bin/sleep", "600"]);
    await running(c);
    // `true` exits at once: the process is gone long before any poll could see it.
    await execDetached(c, ["/bin/sh", "-c", "cp /bin/busybox /tmp/busybox-dropped && /tmp/busybox-dropped true"]);
    const d = await waitFor("drift detection", () => detections.find((x) => x.containerId === c.id && x.path === "/tmp/busybox-dropped"), 10_000);
    assert.equal(d.layerId, `rw:${c.id}`);
    assert.equal(d.reason, "added");
    assert.equal(d.source, "ebpf");
    assert.equal(d.rule, "drift");
    assert.ok(d.pid > 0 && d.at !== undefined);
    // Reported to the aggregator at once (through the spool).
    const stored = await waitFor("detection at the aggregator", async () => (await aggregator.telemetry.detections({ containerId: c.id }, 100)).find((x) => x.id === d.id), 5000);
    assert.equal(stored.path, "/tmp/busybox-dropped");
    // The same exec of an image binary is not drift.
    assert.ok(!detections.some((x) => x.containerId === c.id && x.path.startsWith("/bin/")), "image binaries are not drift");
    // And it feeds the layer's window.
    await waitFor("drift counted in a window", () => windows.find((w) => w.containerId === c.id && w.layers.some((l) => l.layerId === `rw:${c.id}` && l.driftEvents > 0)), 10_000, 100);
  });

  it("without eBPF (forced off), a long-lived dropped binary is still caught by /proc polling", async () => {
    const polling = await startAgent({ node: "polling-node", sampleMs: 250, windowMs: 2000, refreshMs: 1000, execSource: "proc", log: silentLogger() });
    try {
      assert.equal(polling.telemetry.activeExecSource, "proc-poll");
      assert.match(polling.telemetry.status().execSourceReason, /configured/);
      const found: Detection[] = [];
      polling.telemetry.on("detection", (d) => found.push(d));
      const c = await runContainer(eng.docker, eng.app, ["/bin/sleep", "600"]);
      await waitFor("container in the polling agent", () => polling.collector.container(c.id)?.pid ?? undefined);
      await execDetached(c, ["/bin/sh", "-c", "cp /bin/busybox /tmp/busybox-long && exec /tmp/busybox-long sleep 60"]);
      const d = await waitFor("polled drift detection", () => found.find((x) => x.containerId === c.id && x.path === "/tmp/busybox-long"), 10_000);
      assert.equal(d.layerId, `rw:${c.id}`);
      assert.equal(d.source, "proc-poll");
    } finally {
      await polling.stop();
    }
  });
});

describe("exec-event source selection", () => {
  it("falls back to /proc polling when bpftrace cannot run, and says why", async () => {
    const a = await startAgent({ node: "fallback-node", bpftrace: "/nonexistent/bpftrace", log: silentLogger() });
    try {
      assert.equal(a.telemetry.activeExecSource, "proc-poll");
      assert.match(a.telemetry.status().execSourceReason, /\/nonexistent\/bpftrace/);
    } finally {
      await a.stop();
    }
  });

  it("refuses to start when eBPF is required and unavailable", async () => {
    await assert.rejects(startAgent({ node: "strict-node", execSource: "ebpf", bpftrace: "/nonexistent/bpftrace", log: silentLogger() }), /eBPF exec events were required/);
  });
});

describe("telemetry spool across an aggregator outage", () => {
  let eng: TestEngine;
  let dir: string;

  before(async () => {
    eng = await testEngine();
    dir = await mkdtemp(join(tmpdir(), "sl-spool-"));
  });
  after(async () => {
    await cleanupContainers(eng.docker);
    await rm(dir, { recursive: true, force: true });
  });

  it("every window summary arrives once, in order, after the aggregator comes back", async () => {
    const c = await runContainer(eng.docker, eng.base, ["/bin/sleep", "600"]);
    let aggregator = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    const port = aggregator.port;
    const agent = await startAgent({
      node: "spool-node",
      aggregator: `127.0.0.1:${port}`,
      tls: "insecure",
      dataDir: join(dir, "agent"),
      sampleMs: 100,
      windowMs: 300,
      refreshMs: 1000,
      execSource: "proc",
      log: silentLogger(),
    });
    const key = (w: WindowSummary | undefined) => `${w?.containerId}@${w?.end?.seconds}.${w?.end?.nanos}`;
    const emitted: string[] = [];
    // Windows made before this listener is on: startAgent syncs with the engine after the telemetry
    // starts, which on a loaded host can outlast a 300 ms window. Only microtasks run in between.
    const madeBefore = (await agent.metrics.windows.get()).values[0]?.value ?? 0;
    agent.telemetry.on("window", (w) => emitted.push(key(w)));
    try {
      await waitFor("windows delivered", async () => (await aggregator.telemetry.windows({ node: "spool-node" }, 10)).length >= 2, 10_000);
      await aggregator.stop();
      const pendingBefore = agent.spool?.pending ?? 0;
      await waitFor("windows spooled during the outage", () => (agent.spool?.pending ?? 0) >= pendingBefore + 5, 10_000);
      aggregator = await startAggregator({ dataDir: join(dir, "agg"), listen: `127.0.0.1:${port}`, tls: "insecure", log: silentLogger() });
      await waitFor("link back", () => agent.link?.connected, 15_000);
      // Stop producing, then let the spool drain.
      await agent.telemetry.stop();
      await waitFor("spool drained", () => agent.spool?.pending === 0 || undefined, 15_000);
      const stored = await aggregator.telemetry.windows({ node: "spool-node" }, 100_000);
      const ids = stored.map((s) => `${s.spoolSeq}.${s.index}`);
      assert.equal(new Set(ids).size, ids.length, "no window stored twice");
      const order = stored.map((s) => Number(s.spoolSeq) * 1e5 + s.index);
      assert.deepEqual(order, [...order].sort((a, b) => a - b), "stored in spool order");
      assert.equal(stored.length, madeBefore + emitted.length, `every window arrived (${stored.length} stored, ${madeBefore} + ${emitted.length} emitted)`);
      assert.deepEqual(stored.slice(madeBefore).map((s) => key(s.window)), emitted, "the same windows, in the order they were made");
      assert.ok(stored.some((s) => s.window?.containerId === c.id));
    } finally {
      await agent.stop();
      await aggregator.stop();
    }
  });
});
