/**
 * The LDG against a real engine: layers compared with `docker image inspect` and with the
 * container's real root mount; processes attributed to the layer that provides their executable;
 * a binary dropped at run time is drift.
 */
import assert from "node:assert/strict";
import { readFileSync, readlinkSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { silentLogger } from "../../common/log.js";
import { LayerKind, MountCheckStatus, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { toLdgJson } from "../../cli/ldg-format.js";
import { assertAppImageLayers } from "../harness/test-graphs.js";
import { cleanupContainers, execDetached, execFileP, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

describe("layer dependency graph on a real engine", () => {
  let eng: TestEngine;
  let collector: LdgCollector;
  let metrics: AgentMetrics;

  before(async () => {
    eng = await testEngine();
    metrics = new AgentMetrics();
    collector = new LdgCollector({ docker: eng.docker, node: "test-node", procRoot: "/proc", dockerRoot: eng.info.rootDir, log: silentLogger(), metrics });
  });
  after(async () => cleanupContainers(eng.docker));

  async function graphOf(c: Docker.Container, until: (g: LayerGraph) => boolean): Promise<LayerGraph> {
    return waitFor("graph", async () => {
      await collector.refreshOne(c.id);
      const g = collector.get(c.id);
      return g !== undefined && until(g) ? g : undefined;
    });
  }

  it("lists the image layers exactly as `docker image inspect` and the root mount do", async () => {
    const c = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"]);
    const g = await graphOf(c, (x) => x.pid > 0);
    const { stdout } = await execFileP("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", eng.app]);
    const diffIds = JSON.parse(stdout) as string[];
    assert.ok(diffIds.length >= 4, "test image has at least four layers");
    const image = assertAppImageLayers(g, diffIds);

    // The kernel's view, read here independently of the agent.
    const mi = readFileSync(`/proc/${g.pid}/mountinfo`, "utf8").split("\n").find((l) => l.split(" ")[4] === "/" && l.includes(" - overlay "));
    assert.ok(mi, "container root is an overlay mount");
    const lower = /lowerdir=([^,]+)/.exec(mi)?.[1]?.split(":") ?? [];
    const mounted = lower.map((d) => {
      const short = /\/l\/([A-Z0-9]+)$/.exec(d)?.[1];
      const target = short ? readlinkSync(`${eng.info.rootDir}/overlay2/l/${short}`) : d;
      return /([^/]+)\/diff$/.exec(target)?.[1] ?? target;
    });
    assert.ok(mounted[0]?.endsWith("-init"), "first lowerdir is Docker's init layer");
    assert.deepEqual(mounted.slice(1), image.map((l) => l.cacheId).reverse());
    assert.equal(g.mountCheck?.status, MountCheckStatus.OK, g.mountCheck?.detail);
    assert.deepEqual(g.mountCheck?.mountChain, mounted);

    const json = toLdgJson(g);
    assert.equal(json.container_id, c.id);
    assert.deepEqual(json.layers.map((l) => l.layer_id), g.layers.map((l) => l.layerId));
    assert.ok(json.layers.every((l) => Array.isArray(l.dependencies) && Array.isArray(l.services)));
  });

  it("lists each process under the layer providing its executable, and a dropped binary under rw as drift", async () => {
    const c = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"]);
    await execDetached(c, ["/bin/sleep", "601"]);
    await execDetached(c, ["/bin/sh", "-c", "cp /bin/busybox /tmp/busybox-dropped && exec /tmp/busybox-dropped sleep 602"]);
    // Wait until the shell has exec'd the dropped binary.
    const g = await graphOf(c, (x) => x.layers.reduce((n, l) => n + l.processes.length, 0) === 3 && x.layers.some((l) => l.kind === LayerKind.WRITABLE && l.processes.length === 1));
    const image = g.layers.filter((l) => l.kind === LayerKind.IMAGE);
    const middle = image[2];
    assert.ok(middle !== undefined && middle.index > 0 && middle.index < image.length - 1, "the COPY layer is a middle layer");
    assert.deepEqual(middle.processes.map((p) => [p.exe, p.argv.join(" "), p.drift]), [["/opt/app/bin/busybox", "/opt/app/bin/busybox sleep 600", false]]);
    assert.deepEqual(middle.services, ["busybox"]);
    assert.deepEqual(image[0]?.processes.map((p) => p.argv.join(" ")), ["/bin/sleep 601"]);
    assert.deepEqual(image[0]?.services, ["sleep"]);
    const rw = g.layers.find((l) => l.kind === LayerKind.WRITABLE);
    assert.equal(rw?.drift, true);
    assert.deepEqual(rw?.processes.map((p) => [p.exe, p.drift, p.driftReason]), [["/tmp/busybox-dropped", true, "added"]]);
    assert.equal(image.some((l) => l.drift), false);
  });

  it("adds volumes as layers on top of the image and flags a binary run from one", async () => {
    const vol = `sl-test-vol-${process.pid}`;
    const c = await runContainer(eng.docker, eng.base, ["/bin/sh", "-c", "cp /bin/busybox /data/busybox-tool && exec /data/busybox-tool sleep 600"], { binds: [`${vol}:/data`] });
    // Wait past the `sh` that runs the copy: the graph is taken once the exec'd tool runs.
    const g = await graphOf(c, (x) => x.layers.some((l) => l.processes.some((p) => p.exe === "/data/busybox-tool")));
    const v = g.layers.find((l) => l.layerId === `volume:${vol}`);
    assert.ok(v, "volume layer present");
    assert.equal(v.kind, LayerKind.VOLUME);
    assert.equal(v.mountPoint, "/data");
    assert.deepEqual(v.dependencies, [g.layers.find((l) => l.kind === LayerKind.IMAGE)?.layerId]);
    assert.deepEqual(v.processes.map((p) => [p.exe, p.driftReason]), [["/data/busybox-tool", "volume"]]);
    await c.remove({ force: true });
    await eng.docker.getVolume(vol).remove().catch(() => undefined);
  });

  it("skips a container that vanished between list and inspect, quietly", async () => {
    const before = (await metrics.vanished.get()).values.find((v) => v.labels["what"] === "container")?.value ?? 0;
    await collector.refreshOne("0".repeat(64));
    assert.equal(collector.get("0".repeat(64)), undefined);
    const now = (await metrics.vanished.get()).values.find((v) => v.labels["what"] === "container")?.value ?? 0;
    assert.equal(now, before + 1);
  });
});
