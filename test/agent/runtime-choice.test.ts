/**
 * `--runtime`: auto falls back to the Docker engine when containerd does not answer (or answers
 * without CRI), a missing socket is an error that names the flags and what to mount; on Docker, a
 * pod's sandbox (cri-dockerd's `podsandbox`) is never listed and a pod's containers carry the pod
 * from the kubelet's labels.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connectRuntime } from "../../agent/runtime/connect.js";
import { DockerRuntime, KUBE_LABELS } from "../../agent/runtime/docker-runtime.js";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { silentLogger } from "../../common/log.js";
import { Code, ShadowError } from "../../common/errors.js";
import { cleanupContainers, runContainer, testEngine, type TestEngine } from "../harness/engine.js";

const DOCKER_SOCKET = process.env["SHADOWLAYER_DOCKER_SOCKET"] ?? "/var/run/docker.sock";

describe("runtime choice", () => {
  let eng: TestEngine;
  before(async () => {
    eng = await testEngine();
  });
  after(async () => cleanupContainers(eng.docker));

  it("auto: no containerd socket -> the Docker engine", async () => {
    const { runtime, docker } = await connectRuntime({ runtime: "auto", containerdSocket: "/nonexistent/containerd.sock", dockerSocket: DOCKER_SOCKET, timeoutMs: 3000 });
    assert.equal(runtime.info.kind, "docker");
    assert.equal(runtime.info.driver, "overlay2");
    assert.ok(docker !== undefined, "the acting half gets the Engine API");
    runtime.close();
  });

  it("auto with neither socket answering: one error naming both, the flags and what to mount", async () => {
    const err = await connectRuntime({ runtime: "auto", containerdSocket: "/nonexistent/containerd.sock", dockerSocket: "/nonexistent/docker.sock", timeoutMs: 2000 }).then(
      () => assert.fail("connected to nothing"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ShadowError);
    assert.equal(err.code, Code.EngineUnavailable);
    for (const s of ["/nonexistent/containerd.sock", "/nonexistent/docker.sock", "--runtime", "--containerd-socket", "--containerd-snapshots"]) assert.ok(err.message.includes(s), `${s} in: ${err.message}`);
  });

  it("containerd asked for and absent: the error names the socket and the flag", async () => {
    const err = await connectRuntime({ runtime: "containerd", containerdSocket: "/nonexistent/containerd.sock", timeoutMs: 2000 }).then(
      () => assert.fail("connected to nothing"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ShadowError);
    assert.match(err.message, /\/nonexistent\/containerd\.sock/);
    assert.match(err.message, /--containerd-socket|--runtime/);
  });

  it("docker: a cri-dockerd sandbox is not listed nor graphed; a pod's container carries its pod", async () => {
    const runtime = new DockerRuntime({ docker: eng.docker, dockerRoot: eng.info.rootDir });
    const podLabels = { [KUBE_LABELS.pod]: "web-0", [KUBE_LABELS.namespace]: "shop", [KUBE_LABELS.uid]: "0f6b7c1e-1111-4222-8333-944445555666" };
    const sandbox = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"], { labels: { ...podLabels, [KUBE_LABELS.dockerType]: "podsandbox" } });
    const app = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"], { labels: { ...podLabels, [KUBE_LABELS.dockerType]: "container" } });
    const ids = await runtime.listContainers();
    assert.ok(ids.includes(app.id));
    assert.ok(!ids.includes(sandbox.id), "the sandbox runs no code of the user's");
    assert.equal(await runtime.inspect(sandbox.id), undefined);

    const collector = new LdgCollector({ runtime, node: "rt-node", procRoot: "/proc", log: silentLogger(), metrics: new AgentMetrics() });
    await collector.refreshAll();
    assert.equal(collector.get(sandbox.id), undefined);
    const g = collector.get(app.id);
    assert.equal(g?.runtime, "docker");
    assert.equal(g?.pod, "web-0");
    assert.equal(g?.namespace, "shop");
    assert.equal(g?.podUid, podLabels[KUBE_LABELS.uid]);
    // An ordinary container is in no pod.
    const plain = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"]);
    await collector.refreshOne(plain.id);
    assert.equal(collector.get(plain.id)?.pod, "");
    assert.equal(collector.get(plain.id)?.namespace, "");
  });
});
