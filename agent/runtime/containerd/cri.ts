/**
 * Typed calls to the Kubernetes CRI (runtime.v1 RuntimeService) on containerd's
 * socket: what the agent reads about pods, and what the tests use to create host-network pods
 * the way a kubelet would. Failed calls reject with a ShadowError naming the call (NOT_FOUND
 * becomes Code.NotFound, so callers can skip a pod deleted mid-scan).
 */
import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { callUnary } from "../../../common/grpc.js";
import {
  RuntimeService,
  type ContainerConfigSchema,
  type ContainerFilterSchema,
  type Container,
  type ContainerStatusResponse,
  type PodSandbox,
  type PodSandboxConfigSchema,
  type PodSandboxFilterSchema,
  type PodSandboxStatusResponse,
  type VersionResponse,
} from "../../../proto/gen/runtime/v1/api_pb.js";
import { callError, unixClient } from "./client.js";

export type PodSandboxConfigInit = MessageInitShape<typeof PodSandboxConfigSchema>;
export type ContainerConfigInit = MessageInitShape<typeof ContainerConfigSchema>;
export type ContainerFilterInit = MessageInitShape<typeof ContainerFilterSchema>;
export type PodSandboxFilterInit = MessageInitShape<typeof PodSandboxFilterSchema>;

/** The CRI API version this client speaks (sent in VersionRequest). */
export const CRI_API_VERSION = "v1";

export class CriClient {
  private readonly runtime: grpc.Client;
  private readonly deadlineMs: number;

  /** `socket`: containerd's socket path (the CRI plugin serves on it), or a `unix://` address. */
  constructor(socket: string, opts: { deadlineMs?: number } = {}) {
    this.runtime = unixClient(RuntimeService, socket);
    this.deadlineMs = opts.deadlineMs ?? 10_000;
  }

  private async call<T>(what: string, p: () => Promise<T>): Promise<T> {
    try {
      return await p();
    } catch (err) {
      throw callError(`CRI ${what}`, err);
    }
  }

  version(): Promise<VersionResponse> {
    return this.call("Version", () => callUnary(this.runtime, RuntimeService.method.version, { version: CRI_API_VERSION }, { deadlineMs: this.deadlineMs }));
  }

  /** Runs a pod sandbox; resolves to its id. Pulling is not done here: the sandbox image must be present. */
  async runPodSandbox(config: PodSandboxConfigInit, runtimeHandler = ""): Promise<string> {
    const res = await this.call("RunPodSandbox", () =>
      // Starting a sandbox runs the pause container and may take a while on a busy host.
      callUnary(this.runtime, RuntimeService.method.runPodSandbox, { config, runtimeHandler }, { deadlineMs: Math.max(this.deadlineMs, 60_000) }),
    );
    return res.podSandboxId;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call("StopPodSandbox", () => callUnary(this.runtime, RuntimeService.method.stopPodSandbox, { podSandboxId: id }, { deadlineMs: Math.max(this.deadlineMs, 60_000) }));
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call("RemovePodSandbox", () => callUnary(this.runtime, RuntimeService.method.removePodSandbox, { podSandboxId: id }, { deadlineMs: Math.max(this.deadlineMs, 60_000) }));
  }

  /** Creates a container in a pod; resolves to its id. `sandboxConfig` is the pod's config as given to runPodSandbox. */
  async createContainer(podId: string, config: ContainerConfigInit, sandboxConfig: PodSandboxConfigInit): Promise<string> {
    const res = await this.call("CreateContainer", () =>
      callUnary(this.runtime, RuntimeService.method.createContainer, { podSandboxId: podId, config, sandboxConfig }, { deadlineMs: Math.max(this.deadlineMs, 60_000) }),
    );
    return res.containerId;
  }

  async startContainer(id: string): Promise<void> {
    await this.call("StartContainer", () => callUnary(this.runtime, RuntimeService.method.startContainer, { containerId: id }, { deadlineMs: Math.max(this.deadlineMs, 60_000) }));
  }

  /** Stops a container, killing it after `timeoutS` seconds (0: at once). */
  async stopContainer(id: string, timeoutS: number): Promise<void> {
    await this.call("StopContainer", () =>
      callUnary(this.runtime, RuntimeService.method.stopContainer, { containerId: id, timeout: BigInt(Math.max(0, Math.floor(timeoutS))) }, { deadlineMs: this.deadlineMs + Math.max(0, timeoutS) * 1000 }),
    );
  }

  async removeContainer(id: string): Promise<void> {
    await this.call("RemoveContainer", () => callUnary(this.runtime, RuntimeService.method.removeContainer, { containerId: id }, { deadlineMs: Math.max(this.deadlineMs, 60_000) }));
  }

  async listContainers(filter?: ContainerFilterInit): Promise<Container[]> {
    const res = await this.call("ListContainers", () =>
      callUnary(this.runtime, RuntimeService.method.listContainers, filter === undefined ? {} : { filter }, { deadlineMs: this.deadlineMs }),
    );
    return res.containers;
  }

  containerStatus(id: string, verbose = false): Promise<ContainerStatusResponse> {
    return this.call("ContainerStatus", () => callUnary(this.runtime, RuntimeService.method.containerStatus, { containerId: id, verbose }, { deadlineMs: this.deadlineMs }));
  }

  async listPodSandbox(filter?: PodSandboxFilterInit): Promise<PodSandbox[]> {
    const res = await this.call("ListPodSandbox", () =>
      callUnary(this.runtime, RuntimeService.method.listPodSandbox, filter === undefined ? {} : { filter }, { deadlineMs: this.deadlineMs }),
    );
    return res.items;
  }

  podSandboxStatus(id: string, verbose = false): Promise<PodSandboxStatusResponse> {
    return this.call("PodSandboxStatus", () => callUnary(this.runtime, RuntimeService.method.podSandboxStatus, { podSandboxId: id, verbose }, { deadlineMs: this.deadlineMs }));
  }

  close(): void {
    this.runtime.close();
  }
}
