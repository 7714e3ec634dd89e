/**
 * The CLI on a containerd node: `shadowlayer agent --runtime containerd --containerd-socket S` as
 * its own process, reporting to an aggregator; `containers` and `graph --json` show each CRI pod's
 * container with its pod, namespace and runtime; a policy selected by namespace applies to the
 * pod in that namespace and not to another. A socket that is not there is refused in one sentence
 * naming the flag.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { writeEndpoint } from "../../cli/endpoint.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { execFileP, waitFor } from "../harness/engine.js";
import { releaseContainerd, runPod, testContainerd, type RunningPod, type TestContainerd } from "../harness/containerd.js";

const CLI = join(PACKAGE_ROOT, "dist", "cli", "main.js");
const NODE = "ctrd-cli-node";

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileP(process.execPath, [CLI, ...args], { timeout: 30_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

interface ContainerRow {
  container_id: string;
  pod: string;
  namespace: string;
  runtime: string;
  state: string;
}

describe("CLI on a containerd node", () => {
  let dir: string;
  let ctd: TestContainerd;
  let agg: RunningAggregator | undefined;
  let agent: ChildProcess | undefined;
  let agentErr = "";
  let web: RunningPod;
  let other: RunningPod;
  const webName = `web-${process.pid}`;
  const otherName = `batch-${process.pid}`;

  before(async () => {
    ctd = await testContainerd();
    dir = await mkdtemp(join(tmpdir(), "sl-ctrd-cli-"));
    await initCerts(join(dir, "tls"), { nodes: [NODE] });
    agg = await startAggregator({ dataDir: join(dir, "aggregator"), listen: "127.0.0.1:0", tls: await loadTls(join(dir, "tls"), { role: "aggregator" }), log: silentLogger() });
    // What `up` leaves for the client commands: they find the aggregator through --data-dir alone.
    await writeEndpoint(dir, { address: `127.0.0.1:${agg.port}`, insecure: false, pid: process.pid, node: NODE, startedAt: new Date().toISOString() });
    agent = spawn(
      process.execPath,
      [CLI, "agent", "--node", NODE, "--runtime", "containerd", "--containerd-socket", ctd.socket, "--containerd-namespace", ctd.namespace,
        "--aggregator", `127.0.0.1:${agg.port}`, "--data-dir", dir, "--http", "127.0.0.1:0", "--exec-source", "proc", "--anomaly", "off", "--refresh-ms", "1000"],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    agent.stderr?.on("data", (b: Buffer) => (agentErr = (agentErr + b.toString()).slice(-4000)));
    [web, other] = await Promise.all([
      runPod({ name: webName, namespace: "team-cli", labels: { tier: "web" }, image: ctd.appImage, command: ["/opt/app/bin/busybox", "sleep", "600"] }),
      runPod({ name: otherName, namespace: "team-other", image: ctd.appImage, command: ["/opt/app/bin/busybox", "sleep", "600"] }),
    ]);
  });

  after(async () => {
    if (agent !== undefined && agent.exitCode === null) {
      const exited = new Promise((r) => agent?.once("exit", r));
      agent.kill("SIGTERM");
      await exited;
    }
    await agg?.stop();
    await releaseContainerd();
    await rm(dir, { recursive: true, force: true });
  });

  async function containers(): Promise<ContainerRow[]> {
    const r = await cli(["containers", "--json", "--data-dir", dir]);
    assert.equal(r.code, 0, `containers failed: ${r.stderr}; agent: ${agentErr}`);
    return JSON.parse(r.stdout) as ContainerRow[];
  }

  it("lists each pod's container with its pod, namespace and runtime (containers, graph --json)", async () => {
    const rows = await waitFor(
      "both pods' containers listed, running",
      async () => {
        if (agent?.exitCode !== null) assert.fail(`the agent exited (${agent?.exitCode}): ${agentErr}`);
        const all = await containers();
        const w = all.find((c) => c.container_id === web.containerId && c.state === "running");
        const o = all.find((c) => c.container_id === other.containerId && c.state === "running");
        return w && o ? { w, o, all } : undefined;
      },
      20_000,
      250,
    );
    assert.deepEqual([rows.w.pod, rows.w.namespace, rows.w.runtime], [webName, "team-cli", "containerd"]);
    assert.deepEqual([rows.o.pod, rows.o.namespace, rows.o.runtime], [otherName, "team-other", "containerd"]);
    assert.ok(!rows.all.some((c) => c.container_id === web.podId || c.container_id === other.podId), "sandboxes are not containers");

    const table = await cli(["containers", "--data-dir", dir]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^CONTAINER\s+NAME\s+POD\s+IMAGE/m);
    assert.match(table.stdout, new RegExp(`^${web.containerId.slice(0, 12)}\\s+\\S+\\s+team-cli/${webName}\\s`, "m"));

    const g = await cli(["graph", web.containerId.slice(0, 12), "--json", "--data-dir", dir]);
    assert.equal(g.code, 0, g.stderr);
    const json = JSON.parse(g.stdout) as { container_id: string; pod: string; namespace: string; pod_uid: string; runtime: string; pod_labels: Record<string, string>; layers: unknown[] };
    assert.equal(json.container_id, web.containerId);
    assert.equal(json.pod, webName);
    assert.equal(json.namespace, "team-cli");
    assert.equal(json.pod_uid, web.uid);
    assert.equal(json.runtime, "containerd");
    assert.equal(json.pod_labels["tier"], "web");
    assert.equal(json.layers.length, 5, "four image layers and the writable one");
  });

  it("applies a namespace policy to the pod in that namespace only", async () => {
    const set = await cli(["policy", "set", "team-cli-strict", "--namespace", "team-cli", "--rebuild", "7", "--switch", "93", "--data-dir", dir]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /policy team-cli-strict set: rebuild at 7, switch at 93/);
    const policies = await waitFor(
      "scores under the new policy",
      async () => {
        const r = await cli(["scores", "--json", "--data-dir", dir]);
        if (r.code !== 0) return undefined;
        const rows = JSON.parse(r.stdout) as Array<{ container_id: string; policy?: { name: string; namespace?: string; rebuild_threshold: number } }>;
        const w = rows.find((s) => s.container_id === web.containerId)?.policy;
        const o = rows.find((s) => s.container_id === other.containerId)?.policy;
        return w?.name === "team-cli-strict" && o !== undefined ? { w, o } : undefined;
      },
      15_000,
      250,
    );
    assert.equal(policies.w.rebuild_threshold, 7);
    assert.equal(policies.o.name, "default", "a pod in another namespace keeps the default policy");
  });

  it("refuses a containerd socket that is not there, naming the flag", async () => {
    const r = await cli(["agent", "--node", NODE, "--runtime", "containerd", "--containerd-socket", `/run/sl-missing-${process.pid}/containerd.sock`, "--http", "127.0.0.1:0", "--data-dir", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^shadowlayer: containerd socket /m);
    assert.match(r.stderr, new RegExp(`/run/sl-missing-${process.pid}/containerd\\.sock`));
    assert.match(r.stderr, /--containerd-socket/);
  });
});
