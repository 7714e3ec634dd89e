/**
 * Test access to shadowlayer's own containerd (test/harness/containerd-host.sh starts it, with the
 * CRI plugin on and its own root, state and socket; Docker's containerd is never touched).
 *
 * Nothing can be pulled here: the sandbox ("pause") image is built locally through the Docker
 * engine from busybox-static, and it and the demo images are moved over with `docker save` →
 * `ctr -n k8s.io images import` (skipped when the same image id is already there). Pods are run
 * the kubelet's way, over CRI's gRPC API, with host networking (no CNI is configured).
 */
import { spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { findBusybox } from "../../cli/demo-images.js";
import { followEngine } from "../../common/engine-progress.js";
import { Code } from "../../common/errors.js";
import { execFileP, testEngine, TEST_LABEL, type TestEngine } from "./engine.js";
import { CriClient, type PodSandboxConfigInit } from "../../agent/runtime/containerd/cri.js";
import { NamespaceMode } from "../../proto/gen/runtime/v1/api_pb.js";


/** The CRI `sandbox_image` containerd-host.sh configures (built here, never pulled). */
export const SANDBOX_IMAGE = process.env["SHADOWLAYER_SANDBOX_IMAGE"] ?? "shadowlayer.test/pause:1";
/** CRI's containerd namespace (the kubelet's). */
export const CRI_NAMESPACE = "k8s.io";
const RECIPE_LABEL = "org.shadowlayer.recipe";
/** containerd-host.sh's run directory (socket, state, runc root). */
const CONTAINERD_DIR = process.env["SHADOWLAYER_CONTAINERD_DIR"] ?? "/run/shadowlayer-containerd";
/** The sandbox process: sleeps until told to stop (PID 1 ignores signals it does not trap). */
const PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done";

export interface TestContainerd {
  socket: string;
  namespace: string;
  /** A CRI client on the socket (the kubelet's API). */
  criClient: CriClient;
  /** containerd's root (content, metadata, snapshots). */
  root: string;
  /** The overlayfs snapshotter's snapshot directories (`<root>/io.containerd.snapshotter.v1.overlayfs/snapshots`). */
  snapshotsDir: string;
  /** The 4-layer test image, as containerd names it (`docker.io/shadowlayer-demo/app:1`). */
  appImage: string;
  /** Its config digest, which is the Docker image id. */
  appImageId: string;
  baseImage: string;
  baseImageId: string;
  sandboxImage: string;
  /** The Docker engine the images came from. */
  engine: TestEngine;
}

let cached: Promise<TestContainerd> | undefined;

/** Starts (or reuses) the test containerd and imports the test images; cached for the process. */
export function testContainerd(): Promise<TestContainerd> {
  cached ??= setUp().catch((err: unknown) => {
    cached = undefined;
    throw new Error(`cannot start the test containerd: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  });
  return cached;
}

function hostScript(): string {
  for (const rel of ["../../../test/harness/containerd-host.sh", "./containerd-host.sh"]) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error("test/harness/containerd-host.sh not found next to the test harness");
}

/** Runs containerd-host.sh; returns the socket it prints. */
async function startHost(): Promise<string> {
  const script = hostScript();
  try {
    const { stdout } = await execFileP("bash", [script], { timeout: 300_000, maxBuffer: 1 << 20 });
    const socket = stdout.trim().split("\n").pop() ?? "";
    if (!socket.startsWith("/")) throw new Error(`containerd-host.sh printed no socket path (got ${JSON.stringify(stdout)})`);
    return socket;
  } catch (err) {
    const e = err as { stderr?: string; message?: string };
    throw new Error(`${script} failed: ${(e.stderr ?? "").trim() || e.message}`);
  }
}

/** `ctr --address <socket> -n k8s.io …`. */
export async function ctr(socket: string, args: string[], timeoutMs = 60_000): Promise<string> {
  try {
    const { stdout } = await execFileP("ctr", ["--address", socket, "-n", CRI_NAMESPACE, ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message?: string };
    throw new Error(`ctr ${args.join(" ")}: ${(e.stderr ?? "").trim() || e.message}`);
  }
}

/** ref → manifest digest, as `ctr images ls` shows them. */
async function importedImages(socket: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const line of (await ctr(socket, ["images", "ls"])).split("\n").slice(1)) {
    const [ref, , digest] = line.trim().split(/\s+/);
    if (ref && digest) out.set(ref, digest);
  }
  return out;
}

/** How containerd names a Docker reference (`docker.io/library/…` for bare names). */
export function containerdRef(ref: string): string {
  const slash = ref.indexOf("/");
  const first = slash < 0 ? "" : ref.slice(0, slash);
  const hasDomain = first.includes(".") || first.includes(":") || first === "localhost";
  const named = hasDomain ? ref : slash < 0 ? `docker.io/library/${ref}` : `docker.io/${ref}`;
  return /:[^/]+$/.test(named) || named.includes("@") ? named : `${named}:latest`;
}

/**
 * Imports Docker images into containerd's k8s.io namespace unless each is there already with the
 * same image id (CRI adds a `sha256:<id>` reference for every image it manages).
 */
async function importImages(socket: string, docker: Docker, refs: string[]): Promise<Map<string, string>> {
  const ids = new Map<string, string>();
  for (const ref of refs) ids.set(ref, ((await docker.getImage(ref).inspect()) as { Id: string }).Id);
  const have = await importedImages(socket);
  const missing = refs.filter((ref) => {
    const digest = have.get(containerdRef(ref));
    return digest === undefined || have.get(ids.get(ref) ?? "") !== digest;
  });
  if (missing.length > 0) {
    await new Promise<void>((resolve, reject) => {
      // The same engine testEngine() dials (SHADOWLAYER_DOCKER_SOCKET when set).
      const engineSock = process.env["SHADOWLAYER_DOCKER_SOCKET"];
      const env = engineSock !== undefined ? { ...process.env, DOCKER_HOST: `unix://${engineSock.replace(/^unix:\/\//, "")}` } : process.env;
      const save = spawn("docker", ["save", ...missing], { stdio: ["ignore", "pipe", "pipe"], env });
      const imp = spawn("ctr", ["--address", socket, "-n", CRI_NAMESPACE, "images", "import", "-"], { stdio: ["pipe", "ignore", "pipe"] });
      let err = "";
      save.stderr.on("data", (d: Buffer) => (err += d.toString()));
      imp.stderr.on("data", (d: Buffer) => (err += d.toString()));
      save.stdout.pipe(imp.stdin);
      let pending = 2;
      const done = (what: string) => (code: number | null) => {
        if (code !== 0) reject(new Error(`${what} exited ${code}: ${err.trim()}`));
        else if (--pending === 0) resolve();
      };
      save.on("error", reject).on("close", done(`docker save ${missing.join(" ")}`));
      imp.on("error", reject).on("close", done("ctr images import"));
    });
    const now = await importedImages(socket);
    for (const ref of missing) {
      const digest = now.get(containerdRef(ref));
      if (digest === undefined || now.get(ids.get(ref) ?? "") !== digest) throw new Error(`${ref} is not in containerd after the import (as ${containerdRef(ref)})`);
    }
  }
  return ids;
}

/** Builds the sandbox image through the Docker engine (one layer: busybox, sh, sleep) unless built from the same recipe. */
async function ensureSandboxImage(docker: Docker): Promise<void> {
  const busybox = findBusybox();
  const recipe = createHash("sha256").update(busybox).update(PAUSE_SCRIPT).digest("hex").slice(0, 16);
  try {
    const info = (await docker.getImage(SANDBOX_IMAGE).inspect()) as { Config?: { Labels?: Record<string, string> | null } };
    if (info.Config?.Labels?.[RECIPE_LABEL] === recipe) return;
  } catch {
    // not built yet
  }
  const p = tar.pack();
  for (const d of ["bin", "tmp", "proc", "sys", "dev", "etc"]) p.entry({ name: d, type: "directory", mode: 0o755, mtime: new Date(0) });
  p.entry({ name: "bin/busybox", mode: 0o755, mtime: new Date(0) }, busybox);
  for (const a of ["sh", "sleep"]) p.entry({ name: `bin/${a}`, type: "symlink", linkname: "busybox", mtime: new Date(0) });
  p.finalize();
  const [repo, tag] = [SANDBOX_IMAGE.slice(0, SANDBOX_IMAGE.lastIndexOf(":")), SANDBOX_IMAGE.slice(SANDBOX_IMAGE.lastIndexOf(":") + 1)];
  const stream = (await docker.importImage(Readable.from(p as AsyncIterable<Buffer>), {
    repo,
    tag,
    changes: [`LABEL ${RECIPE_LABEL}=${recipe}`, `ENTRYPOINT ["/bin/sh", "-c", ${JSON.stringify(PAUSE_SCRIPT)}]`],
  } as object)) as NodeJS.ReadableStream;
  await followEngine(docker, stream, `import of ${SANDBOX_IMAGE}`, Code.Internal);
}

async function setUp(): Promise<TestContainerd> {
  const socket = await startHost();
  const engine = await testEngine();
  await ensureSandboxImage(engine.docker);
  const ids = await importImages(socket, engine.docker, [SANDBOX_IMAGE, engine.app, engine.base]);
  const cri = new CriClient(socket, { deadlineMs: 30_000 });
  await cri.version();
  criClient = cri;
  await sweepDeadProcesses(socket, cri);
  const appImage = containerdRef(engine.app);
  const root = process.env["SHADOWLAYER_CONTAINERD_ROOT"] ?? "/var/lib/shadowlayer-containerd";
  return {
    socket,
    namespace: CRI_NAMESPACE,
    criClient: cri,
    root,
    snapshotsDir: join(root, "io.containerd.snapshotter.v1.overlayfs", "snapshots"),
    appImage,
    appImageId: ids.get(engine.app) ?? "",
    baseImage: containerdRef(engine.base),
    baseImageId: ids.get(engine.base) ?? "",
    sandboxImage: SANDBOX_IMAGE,
    engine,
  };
}

export { TEST_LABEL };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes pods (and ctr containers) left by test processes that died before their cleanup. */
async function sweepDeadProcesses(socket: string, cri: CriClient): Promise<void> {
  const dead = (labels: Record<string, string>): boolean => {
    const pid = Number(labels[TEST_LABEL]);
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !alive(pid);
  };
  for (const p of await cri.listPodSandbox()) {
    if (!dead(p.labels)) continue;
    await cri.stopPodSandbox(p.id).catch(() => undefined);
    await cri.removePodSandbox(p.id).catch(() => undefined);
  }
  const ids = (await ctr(socket, ["containers", "ls", "-q", `labels."${TEST_LABEL}"`]).catch(() => "")).split("\n").filter((x) => x !== "");
  for (const id of ids) {
    const info = await ctr(socket, ["containers", "info", id]).then((t) => JSON.parse(t) as { Labels?: Record<string, string> }, () => undefined);
    if (info !== undefined && dead(info.Labels ?? {})) await removeCtrContainer(socket, id);
  }
}

/** A temp dir for pod logs, removed when the process exits. */
let logRoot: string | undefined;
export function podLogRoot(): string {
  if (logRoot === undefined) {
    logRoot = mkdtempSync(join(tmpdir(), "sl-cri-logs-"));
    const dir = logRoot;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return logRoot;
}

let criClient: CriClient | undefined;

export interface PodSpec {
  /** Pod name (metadata.name) and, by default, the container's name too. */
  name: string;
  /** Kubernetes namespace. */
  namespace: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** The workload image (containerd's name, e.g. TestContainerd.appImage). */
  image: string;
  command: string[];
  args?: string[];
  mounts?: Array<{ containerPath: string; hostPath: string; readonly?: boolean }>;
  containerName?: string;
  containerLabels?: Record<string, string>;
  containerAnnotations?: Record<string, string>;
}

export interface RunningPod {
  podId: string;
  containerId: string;
  uid: string;
}

function client(): CriClient {
  if (criClient === undefined) throw new Error("testContainerd() has not been awaited");
  return criClient;
}

/**
 * Runs a pod of one container over CRI (RunPodSandbox, CreateContainer, StartContainer), as the
 * kubelet does: host network (no CNI here), a pod cgroup under /kubepods like the kubelet's with
 * cgroupfs, logs under a temp dir, and the test label with this process's pid for cleanup.
 */
export async function runPod(spec: PodSpec): Promise<RunningPod> {
  const cri = client();
  const uid = spec.uid ?? randomUUID();
  const nsOptions = { network: NamespaceMode.NODE, pid: NamespaceMode.CONTAINER, ipc: NamespaceMode.POD };
  // The labels the kubelet puts on a pod's sandbox and containers.
  const kube = { "io.kubernetes.pod.name": spec.name, "io.kubernetes.pod.namespace": spec.namespace, "io.kubernetes.pod.uid": uid };
  const config: PodSandboxConfigInit = {
    metadata: { name: spec.name, namespace: spec.namespace, uid, attempt: 0 },
    // Host network shares the node's UTS namespace: the kubelet sets no hostname then.
    hostname: "",
    logDirectory: join(podLogRoot(), uid),
    labels: { ...spec.labels, ...kube, [TEST_LABEL]: String(process.pid) },
    annotations: { ...spec.annotations },
    linux: { cgroupParent: `/kubepods/besteffort/pod${uid}`, securityContext: { namespaceOptions: nsOptions } },
  };
  const podId = await cri.runPodSandbox(config);
  try {
    const name = spec.containerName ?? spec.name;
    const containerId = await cri.createContainer(
      podId,
      {
        metadata: { name, attempt: 0 },
        image: { image: spec.image },
        command: spec.command,
        args: spec.args ?? [],
        mounts: (spec.mounts ?? []).map((m) => ({ containerPath: m.containerPath, hostPath: m.hostPath, readonly: m.readonly ?? false })),
        labels: { ...spec.containerLabels, ...kube, "io.kubernetes.container.name": name, [TEST_LABEL]: String(process.pid) },
        annotations: { ...spec.containerAnnotations },
        logPath: `${name}.log`,
        linux: { securityContext: { namespaceOptions: nsOptions } },
      },
      config,
    );
    await cri.startContainer(containerId);
    return { podId, containerId, uid };
  } catch (err) {
    await removePod(podId).catch(() => undefined);
    throw err;
  }
}

/** Stops and removes a pod sandbox and its containers (the kubelet's order). */
export async function removePod(podId: string): Promise<void> {
  const cri = client();
  await cri.stopPodSandbox(podId);
  await cri.removePodSandbox(podId);
}

/** The pid of a pod container's process (0 when it is not running), from CRI's verbose ContainerStatus. */
export async function containerPid(containerId: string): Promise<number> {
  const res = await client().containerStatus(containerId, true);
  const info = res.info["info"];
  if (info === undefined) return 0;
  const pid = (JSON.parse(info) as { pid?: unknown }).pid;
  return typeof pid === "number" ? pid : 0;
}

/** Removes every pod this test process started (by the test label), and its ctr containers. */
export async function cleanupPods(): Promise<void> {
  if (criClient === undefined) return;
  const items = await criClient.listPodSandbox({ labelSelector: { [TEST_LABEL]: String(process.pid) } });
  await Promise.all(items.map((p) => removePod(p.id).catch(() => undefined)));
  const socket = (await cached?.catch(() => undefined))?.socket;
  if (socket !== undefined) {
    const ids = (await ctr(socket, ["containers", "ls", "-q", `labels."${TEST_LABEL}"==${process.pid}`]).catch(() => "")).split("\n").filter((x) => x !== "");
    for (const id of ids) await removeCtrContainer(socket, id);
  }
}

/** Removes this process's pods and closes the CRI client (call in the last `after`). */
export async function releaseContainerd(): Promise<void> {
  await cleanupPods();
  criClient?.close();
  criClient = undefined;
  cached = undefined;
}

/**
 * Runs a container with `ctr run` in the k8s.io namespace, outside any pod. Only for what CRI
 * cannot do: CRI 1.6 picks one snapshotter for every pod (the config's), so a container on
 * another snapshotter (native) can only be made this way.
 */
export async function runCtrContainer(socket: string, opts: { id: string; image: string; snapshotter?: string; command: string[] }): Promise<void> {
  await ctr(socket, [
    // The runc root of this containerd's CRI (containerd-host.sh), not the system's /run/containerd/runc.
    "run", "-d", "--net-host", "--runc-root", join(CONTAINERD_DIR, "runc"),
    ...(opts.snapshotter ? ["--snapshotter", opts.snapshotter] : []),
    "--label", `${TEST_LABEL}=${process.pid}`,
    opts.image, opts.id, ...opts.command,
  ], 120_000);
}

export async function removeCtrContainer(socket: string, id: string): Promise<void> {
  await ctr(socket, ["tasks", "kill", "-s", "SIGKILL", id]).catch(() => undefined);
  for (let i = 0; i < 40; i++) {
    const out = await ctr(socket, ["tasks", "rm", "-f", id]).then(() => "ok", (e: Error) => e.message);
    if (out === "ok" || /not found/.test(out)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await ctr(socket, ["containers", "rm", id]).catch(() => undefined);
}
