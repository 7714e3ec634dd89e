/**
 * Picks and connects the node's container runtime from `--runtime docker|containerd|auto`.
 *
 * auto: containerd when its socket answers *with CRI* (a kubelet's runtime: that is where a
 * node's pods are), else the Docker engine, else an error naming both sockets and the flags. A
 * containerd without CRI is Docker's own (dockerd runs one with CRI disabled): auto passes it by.
 */
import { connectEngine, engineSocket, type EngineInfo } from "../../common/engine.js";
import { Code, ShadowError } from "../../common/errors.js";
import type Docker from "dockerode";
import { connectContainerd, DEFAULT_CONTAINERD_SOCKET } from "./containerd/containerd-runtime.js";
import { DockerRuntime } from "./docker-runtime.js";
import type { ContainerRuntime, RuntimeChoice } from "./runtime.js";

export interface RuntimeConnectOptions {
  runtime?: RuntimeChoice;
  dockerSocket?: string;
  /** Docker's data root as mounted in the agent; defaults to what the engine reports. */
  dockerRoot?: string;
  containerdSocket?: string;
  /** containerd namespace of the pods (default k8s.io). */
  containerdNamespace?: string;
  /** The overlayfs snapshotter's root as mounted in the agent; defaults to what containerd reports. */
  containerdSnapshots?: string;
  timeoutMs?: number;
}

export interface ConnectedRuntime {
  runtime: ContainerRuntime;
  /** The Engine API (shadows and switchovers act through it); absent on containerd. */
  docker?: { docker: Docker; events: Docker; info: EngineInfo };
  /** auto: why containerd was passed by, when Docker was chosen. */
  passedBy?: string;
}

async function viaDocker(o: RuntimeConnectOptions): Promise<ConnectedRuntime> {
  const socket = engineSocket(o.dockerSocket);
  const engine = await connectEngine(socket, o.timeoutMs);
  return {
    runtime: new DockerRuntime({ ...engine, socket, ...(o.dockerRoot !== undefined ? { dockerRoot: o.dockerRoot } : {}) }),
    docker: engine,
  };
}

async function viaContainerd(o: RuntimeConnectOptions): Promise<ConnectedRuntime> {
  const runtime = await connectContainerd({
    socket: o.containerdSocket ?? DEFAULT_CONTAINERD_SOCKET,
    ...(o.containerdNamespace !== undefined ? { namespace: o.containerdNamespace } : {}),
    ...(o.containerdSnapshots !== undefined ? { snapshotsDir: o.containerdSnapshots } : {}),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
  return { runtime };
}

export async function connectRuntime(o: RuntimeConnectOptions): Promise<ConnectedRuntime> {
  const choice = o.runtime ?? "auto";
  if (choice === "docker") return viaDocker(o);
  if (choice === "containerd") return viaContainerd(o);
  let containerdWhy: string;
  try {
    return await viaContainerd(o);
  } catch (err) {
    containerdWhy = err instanceof Error ? err.message : String(err);
  }
  try {
    return { ...(await viaDocker(o)), passedBy: containerdWhy };
  } catch (err) {
    const dockerWhy = err instanceof Error ? err.message : String(err);
    throw new ShadowError(
      Code.EngineUnavailable,
      `--runtime auto found no container runtime. containerd: ${containerdWhy} Docker: ${dockerWhy} ` +
        "On a Kubernetes node mount the containerd socket (--containerd-socket) and its overlayfs snapshotter directory (--containerd-snapshots), or choose one with --runtime docker|containerd.",
      { cause: err },
    );
  }
}
