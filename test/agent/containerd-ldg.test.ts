/**
 * The LDG on a real containerd with CRI, for a pod's container as a kubelet creates it (over CRI's
 * gRPC API, host networking): its layers are the image config's rootfs.diff_ids layer by layer;
 * the overlayfs snapshot chain containerd reports is the chain the kernel mounted; processes are
 * listed under the layer providing their executable, and a binary dropped at run time is drift.
 * Bad input: a pod deleted mid-scan is skipped and counted; a container on a snapshotter the agent
 * cannot read (native) says why in its mount check; a missing socket or a containerd without CRI
 * is refused with a message naming the flag.
 *
 * Every independent reference here (image config, snapshot parents and mounts, mountinfo) comes
 * from `ctr` and the kernel, not from the agent.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { connectContainerd } from "../../agent/runtime/containerd/containerd-runtime.js";
import { connectRuntime } from "../../agent/runtime/connect.js";
import type { ContainerRuntime } from "../../agent/runtime/runtime.js";
import { silentLogger } from "../../common/log.js";
import { ShadowError } from "../../common/errors.js";
import { LayerKind, MountCheckStatus, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { toLdgJson } from "../../cli/ldg-format.js";
import { execFileP, waitFor } from "../harness/engine.js";
import { assertAppImageLayers } from "../harness/test-graphs.js";
import { containerPid, ctr, removeCtrContainer, releaseContainerd, removePod, runCtrContainer, runPod, testContainerd, type TestContainerd } from "../harness/containerd.js";

/** The image config as containerd stores it: index/manifest → config, read with `ctr content get`. */
async function imageConfig(socket: string, ref: string): Promise<{ digest: string; diffIds: string[] }> {
  const line = (await ctr(socket, ["images", "ls", `name==${ref}`])).split("\n")[1] ?? "";
  const manifestDigest = line.trim().split(/\s+/)[2] ?? "";
  assert.match(manifestDigest, /^sha256:[0-9a-f]{64}$/, `ctr images ls for ${ref}`);
  const manifest = JSON.parse(await ctr(socket, ["content", "get", manifestDigest])) as { config: { digest: string } };
  const config = JSON.parse(await ctr(socket, ["content", "get", manifest.config.digest])) as { rootfs: { diff_ids: string[] } };
  return { digest: manifest.config.digest, diffIds: config.rootfs.diff_ids };
}

/** OCI chain ids of a list of diff ids, bottom first (computed here, independently of the agent). */
function chainIdsOf(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : `sha256:${createHash("sha256").update(`${prev} ${d}`).digest("hex")}`);
  }
  return out;
}

/** The snapshot id of an overlayfs snapshotter directory (`…/snapshots/<id>/fs`). */
function snapshotId(dir: string): string {
  return /\/snapshots\/([^/]+)\/fs$/.exec(dir)?.[1] ?? dir;
}

/** The root overlay mount of a process, as the kernel shows it. */
function rootMount(pid: number): { lower: string[]; upper: string } {
  const mi = readFileSync(`/proc/${pid}/mountinfo`, "utf8").split("\n").find((l) => l.split(" ")[4] === "/" && l.includes(" - overlay "));
  assert.ok(mi, "container root is an overlay mount");
  return { lower: /lowerdir=([^,]+)/.exec(mi)?.[1]?.split(":") ?? [], upper: /upperdir=([^,]+)/.exec(mi)?.[1] ?? "" };
}

describe("layer dependency graph of a CRI pod on containerd", () => {
  let ctd: TestContainerd;
  let runtime: ContainerRuntime;
  let collector: LdgCollector;
  let metrics: AgentMetrics;
  let pod: { podId: string; containerId: string; uid: string };
  const podName = `ldg-${process.pid}`;

  before(async () => {
    ctd = await testContainerd();
    runtime = await connectContainerd({ socket: ctd.socket, namespace: ctd.namespace, timeoutMs: 5000 });
    metrics = new AgentMetrics();
    collector = new LdgCollector({ runtime, node: "ctrd-node", procRoot: "/proc", log: silentLogger(), metrics });
    // One pod for the layer and process checks: pid 1 runs the middle layer's busybox copy, a
    // child runs the base layer's, and another copies busybox into the writable layer and runs it.
    pod = await runPod({
      name: podName,
      namespace: "team-ldg",
      labels: { app: "ldg" },
      annotations: { "example.com/owner": "ldg-test" },
      image: ctd.appImage,
      command: ["/bin/sh", "-c", "/bin/sleep 601 & (cp /bin/busybox /tmp/busybox-dropped && exec /tmp/busybox-dropped sleep 602) & exec /opt/app/bin/busybox sleep 600"],
    });
  });

  after(async () => {
    runtime?.close();
    await releaseContainerd();
  });

  async function graphOf(id: string, until: (g: LayerGraph) => boolean): Promise<LayerGraph> {
    return waitFor(`graph of ${id.slice(0, 12)}`, async () => {
      await collector.refreshOne(id);
      const g = collector.get(id);
      return g !== undefined && until(g) ? g : undefined;
    });
  }

  it("lists the image's rootfs.diff_ids layer by layer, and the snapshot chain equals the root mount", async () => {
    const g = await graphOf(pod.containerId, (x) => x.pid > 0);
    const cfg = await imageConfig(ctd.socket, ctd.appImage);
    assert.equal(cfg.digest, ctd.appImageId, "the config digest is the Docker image id");
    const { stdout } = await execFileP("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", ctd.engine.app]);
    assert.deepEqual(cfg.diffIds, JSON.parse(stdout), "containerd holds the same layers as the engine");
    assert.ok(cfg.diffIds.length >= 4, "test image has at least four layers");

    assert.equal(g.runtime, "containerd");
    assert.equal(g.storageDriver, "overlayfs");
    assert.equal(g.imageId, ctd.appImageId);
    assert.equal(g.pid, await containerPid(pod.containerId));
    assert.equal(g.pod, podName);
    assert.equal(g.namespace, "team-ldg");
    assert.equal(g.podUid, pod.uid);
    assert.equal(g.podLabels["app"], "ldg");
    assert.equal(g.podAnnotations["example.com/owner"], "ldg-test");

    // The same layers, names and sizes as on Docker (test/agent/ldg.test.ts).
    const image = assertAppImageLayers(g, cfg.diffIds);

    // containerd's chain: the container's snapshot's parents are the image's chain ids, top first.
    const chain = chainIdsOf(cfg.diffIds);
    const parents: string[] = [];
    let key = pod.containerId;
    for (;;) {
      const info = JSON.parse(await ctr(ctd.socket, ["snapshots", "--snapshotter", "overlayfs", "info", key])) as { Parent?: string };
      if (info.Parent === undefined || info.Parent === "") break;
      parents.push(info.Parent);
      key = info.Parent;
    }
    assert.deepEqual(parents, [...chain].reverse(), "snapshot parents are the chain ids");
    // …and the mount containerd hands out for it is the kernel's root mount of the container.
    const mountCmd = await ctr(ctd.socket, ["snapshots", "--snapshotter", "overlayfs", "mounts", "/mnt", pod.containerId]);
    const ctrLower = /lowerdir=([^,\s]+)/.exec(mountCmd)?.[1]?.split(":") ?? [];
    const kernel = rootMount(g.pid);
    assert.deepEqual(kernel.lower, ctrLower, "mountinfo lowerdirs = containerd's snapshot mounts");
    assert.equal(kernel.lower.length, cfg.diffIds.length, "one lowerdir per layer (no init layer on containerd)");
    const mounted = kernel.lower.map(snapshotId);
    assert.deepEqual(image.map((l) => l.cacheId).reverse(), mounted, "each layer's directory is its snapshot");
    assert.equal(g.mountCheck?.status, MountCheckStatus.OK, g.mountCheck?.detail);
    assert.deepEqual(g.mountCheck?.mountChain, mounted);
    assert.deepEqual(g.mountCheck?.engineChain, mounted);

    const json = toLdgJson(g);
    assert.equal(json.container_id, pod.containerId);
    assert.deepEqual(json.layers.map((l) => l.layer_id), g.layers.map((l) => l.layerId));
  });

  it("lists a process from the middle layer under it, and a dropped binary under rw as drift", async () => {
    const g = await graphOf(pod.containerId, (x) => x.layers.reduce((n, l) => n + l.processes.length, 0) === 3 && x.layers.some((l) => l.kind === LayerKind.WRITABLE && l.processes.length === 1));
    const image = g.layers.filter((l) => l.kind === LayerKind.IMAGE);
    const middle = image[2];
    assert.ok(middle !== undefined && middle.index > 0 && middle.index < image.length - 1, "the COPY layer is a middle layer");
    assert.deepEqual(middle.processes.map((p) => [p.exe, p.argv.join(" "), p.drift]), [["/opt/app/bin/busybox", "/opt/app/bin/busybox sleep 600", false]]);
    assert.deepEqual(middle.services, ["busybox"]);
    assert.deepEqual(image[0]?.processes.map((p) => p.argv.join(" ")), ["/bin/sleep 601"]);
    const rw = g.layers.find((l) => l.kind === LayerKind.WRITABLE);
    assert.equal(rw?.drift, true);
    assert.deepEqual(rw?.processes.map((p) => [p.exe, p.drift, p.driftReason]), [["/tmp/busybox-dropped", true, "added"]]);
    assert.equal(image.some((l) => l.drift), false);
    // The pod's sandbox ("pause") is never a graph of its own.
    const all = await runtime.listContainers();
    assert.ok(all.includes(pod.containerId));
    assert.ok(!all.includes(pod.podId), "the sandbox is not listed");
    assert.equal(await runtime.inspect(pod.podId), undefined);
    assert.equal(await runtime.inspect(pod.podId, { listed: true }), undefined, "nor through a list pass");
  });

  it("gives the same facts through a list pass (its lists reused) as through one container's reads", async () => {
    const one = await runtime.inspect(pod.containerId);
    await runtime.listContainers();
    const listed = await runtime.inspect(pod.containerId, { listed: true });
    assert.ok(one !== undefined && listed !== undefined);
    assert.equal(listed.state, "running");
    assert.ok(listed.pid > 0);
    assert.deepEqual(listed, one);
    // A fresh collector's first pass is a list pass: the processes are there too.
    const fresh = new LdgCollector({ runtime, node: "ctrd-pass", procRoot: "/proc", log: silentLogger(), metrics: new AgentMetrics() });
    await fresh.refreshAll();
    const g = fresh.get(pod.containerId);
    assert.equal(g?.pid, listed.pid);
    assert.equal(g?.layers.reduce((n, l) => n + l.processes.length, 0), 3);
  });

  it("adds a pod's hostPath volume as a layer on top of the image and flags a binary run from it", async () => {
    const host = mkdtempSync(join(tmpdir(), "sl-ctrd-vol-"));
    try {
      const p = await runPod({
        name: `vol-${process.pid}`,
        namespace: "team-ldg",
        image: ctd.baseImage,
        command: ["/bin/sh", "-c", "cp /bin/busybox /data/busybox-tool && exec /data/busybox-tool sleep 600"],
        mounts: [{ containerPath: "/data", hostPath: host }],
      });
      // Wait past the `sh` that runs the copy: the graph is taken once the exec'd tool runs.
      const g = await graphOf(p.containerId, (x) => x.layers.some((l) => l.processes.some((q) => q.exe === "/data/busybox-tool")));
      const v = g.layers.find((l) => l.kind === LayerKind.VOLUME);
      assert.ok(v, "volume layer present");
      assert.equal(v.layerId, `volume:${host}`);
      assert.equal(v.mountPoint, "/data");
      assert.deepEqual(v.dependencies, [g.layers.filter((l) => l.kind === LayerKind.IMAGE).at(-1)?.layerId]);
      assert.deepEqual(v.processes.map((q) => [q.exe, q.driftReason]), [["/data/busybox-tool", "volume"]]);
      // The volumes read from the container's OCI spec are exactly CRI's own list (ContainerStatus),
      // without CRI's sandbox files (hosts, resolv.conf, hostname, shm).
      const st = await ctd.criClient.containerStatus(p.containerId);
      const facts = await runtime.inspect(p.containerId);
      assert.deepEqual(
        facts?.mounts.map((m) => [m.destination, m.source, m.rw]),
        (st.status?.mounts ?? []).map((m) => [m.containerPath, m.hostPath, !m.readonly]),
      );
      assert.equal(g.layers.filter((l) => l.kind === LayerKind.VOLUME).length, 1, "no layer for /etc/hosts, resolv.conf, hostname or shm");
      await removePod(p.podId);
    } finally {
      rmSync(host, { recursive: true, force: true });
    }
  });

  it("skips a pod deleted between list and inspect, and counts it", async () => {
    const victim = await runPod({ name: `gone-${process.pid}`, namespace: "team-ldg", image: ctd.appImage, command: ["/opt/app/bin/busybox", "sleep", "600"] });
    const vanished = async () => (await metrics.vanished.get()).values.find((v) => v.labels["what"] === "container")?.value ?? 0;
    const before = await vanished();
    // The runtime as the collector sees it, except that the pod is deleted (over CRI) right after
    // the list that named it: a real deletion mid-scan.
    let deleted = false;
    const racing: ContainerRuntime = Object.create(runtime) as ContainerRuntime;
    racing.listContainers = async () => {
      const ids = await runtime.listContainers();
      assert.ok(ids.includes(victim.containerId), "the victim is listed");
      await removePod(victim.podId);
      deleted = true;
      return ids;
    };
    const scan = new LdgCollector({ runtime: racing, node: "ctrd-node", procRoot: "/proc", log: silentLogger(), metrics });
    await scan.refreshAll();
    assert.ok(deleted);
    assert.equal(scan.get(victim.containerId), undefined, "no graph for the deleted pod");
    assert.ok(scan.get(pod.containerId) !== undefined, "the other pod is graphed");
    assert.equal(await vanished(), before + 1, "counted once as vanished");
  });

  it("reports mount_check unavailable, with the reason, for a container on the native snapshotter", async () => {
    // CRI 1.6 runs every pod on its configured snapshotter (overlayfs here) and cannot pick one per
    // pod, so this container is made with `ctr run --snapshotter native` in the k8s.io namespace.
    const id = `sl-native-${process.pid}`;
    await runCtrContainer(ctd.socket, { id, image: ctd.appImage, snapshotter: "native", command: ["/opt/app/bin/busybox", "sleep", "600"] });
    try {
      const g = await graphOf(id, (x) => x.pid > 0);
      assert.ok((await runtime.listContainers()).includes(id), "a container CRI did not make is listed too");
      const cfg = await imageConfig(ctd.socket, ctd.appImage);
      assert.deepEqual(g.layers.filter((l) => l.kind === LayerKind.IMAGE).map((l) => l.layerId), cfg.diffIds, "the layers are still listed");
      assert.equal(g.mountCheck?.status, MountCheckStatus.UNAVAILABLE);
      assert.match(g.mountCheck?.detail ?? "", /native/, "the reason names the snapshotter");
      assert.equal(g.pod, "", "not in a pod");
      // With no layer directories, the running process is placed on no layer and nothing is drift.
      assert.ok(g.layers.every((l) => l.processes.length === 0 && !l.drift), "no guess from unknown directories");
    } finally {
      await removeCtrContainer(ctd.socket, id);
    }
  });

  it("refuses a missing socket and a containerd without CRI, naming the flag", async () => {
    const missing = await connectRuntime({ runtime: "containerd", containerdSocket: `/run/sl-missing-${process.pid}/containerd.sock`, timeoutMs: 2000 }).then(
      () => assert.fail("connected to a missing socket"),
      (e: unknown) => e,
    );
    assert.ok(missing instanceof ShadowError);
    assert.match(missing.message, /sl-missing-\d+\/containerd\.sock/);
    assert.match(missing.message, /--containerd-socket/);

    // A real containerd with the CRI plugin disabled (as Docker runs its own), on a socket of its own.
    const dir = mkdtempSync(join(tmpdir(), "sl-nocri-"));
    const sock = join(dir, "c.sock");
    const { stdout: defaults } = await execFileP("containerd", ["config", "default"]);
    const config = defaults
      .replace(/^root = .*$/m, `root = "${dir}/root"`)
      .replace(/^state = .*$/m, `state = "${dir}/state"`)
      .replace(/^disabled_plugins = .*$/m, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]')
      .replace(/(\[grpc\]\n(?:.*\n)*?\s*address = ).*/, `$1"${sock}"`)
      .replace(/(\[ttrpc\]\n\s*address = ).*/, `$1"${sock}.ttrpc"`);
    assert.ok(config.includes(`address = "${sock}"`) && !config.includes("/run/containerd/containerd.sock"), "the config is ours only");
    writeFileSync(join(dir, "config.toml"), config);
    let proc: ChildProcess | undefined;
    try {
      proc = spawn("containerd", ["--config", join(dir, "config.toml")], { stdio: "ignore" });
      await waitFor("containerd without CRI", async () => (await execFileP("ctr", ["--address", sock, "version"]).then(() => true, () => undefined)), 15_000, 100);
      const noCri = await connectRuntime({ runtime: "containerd", containerdSocket: sock, timeoutMs: 3000 }).then(
        () => assert.fail("connected to a containerd without CRI"),
        (e: unknown) => e,
      );
      assert.ok(noCri instanceof ShadowError);
      assert.match(noCri.message, /CRI/);
      assert.ok(noCri.message.includes(sock), noCri.message);
      assert.match(noCri.message, /--containerd-socket/);
    } finally {
      if (proc?.pid !== undefined && proc.exitCode === null) {
        const exited = new Promise((r) => proc?.once("exit", r));
        proc.kill("SIGTERM");
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 5000)))]);
        clearTimeout(timer);
        if (proc.exitCode === null) proc.kill("SIGKILL");
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
