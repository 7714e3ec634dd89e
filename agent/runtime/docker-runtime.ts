/**
 * The Docker engine as a ContainerRuntime: containers and images from the Engine API, layer
 * directories from overlay2's layerdb, events from `/events`. Docker has no pods: a container run
 * by cri-dockerd carries the kubelet's `io.kubernetes.*` labels, which become its pod facts.
 */
import { readlinkSync } from "node:fs";
import { join } from "node:path";
import type Docker from "dockerode";
import { isEngineNotFound, type EngineInfo } from "../../common/engine.js";
import { KUBE_LABELS } from "../../common/kube-labels.js";
import { cacheIdOfDir, ImageLayerResolver, type ResolvedImage } from "../layers/image-layers.js";
import { parseContainerInspect, type ContainerFacts, type PodFacts } from "./engine-facts.js";
import type { ContainerRuntime, RuntimeEventHandlers, RuntimeInfo, RuntimeSubscription, StorageLayout } from "./runtime.js";

export { KUBE_LABELS };

/** Pod facts from the kubelet's labels, when a container carries them. */
export function podFromLabels(labels: Record<string, string>): PodFacts | undefined {
  const name = labels[KUBE_LABELS.pod];
  const namespace = labels[KUBE_LABELS.namespace];
  if (name === undefined || namespace === undefined) return undefined;
  return { name, namespace, uid: labels[KUBE_LABELS.uid] ?? "", sandboxId: "", labels: {}, annotations: {} };
}

export function dockerLayout(dockerRoot: string): StorageLayout {
  return {
    dirKey: cacheIdOfDir,
    mountDirKey: (dir) => {
      const m = /\/l\/([A-Z0-9]+)\/?$/.exec(dir);
      if (m?.[1] === undefined) return cacheIdOfDir(dir);
      try {
        // l/<short> -> ../<cacheId>/diff
        return cacheIdOfDir(readlinkSync(join(dockerRoot, "overlay2", "l", m[1])));
      } catch {
        return `l/${m[1]}`;
      }
    },
    isImageEntry: (key) => !key.endsWith("-init"),
  };
}

export interface DockerRuntimeOptions {
  docker: Docker;
  /** Client for the long-lived event stream (no request timeout); `docker` when absent. */
  events?: Docker;
  /** What the engine reported (connectEngine). */
  info?: EngineInfo;
  /** The engine's data root as mounted in the agent; defaults to what the engine reports. */
  dockerRoot?: string;
  socket?: string;
}

export class DockerRuntime implements ContainerRuntime {
  readonly info: RuntimeInfo;
  readonly layout: StorageLayout;
  private readonly resolver: ImageLayerResolver;

  constructor(private readonly o: DockerRuntimeOptions) {
    const root = o.dockerRoot ?? (o.info?.rootDir || "/var/lib/docker");
    this.info = {
      kind: "docker",
      version: o.info?.version ?? "",
      driver: o.info?.driver ?? "overlay2",
      rootDir: root,
      cgroupVersion: o.info?.cgroupVersion ?? "",
      socket: o.socket ?? "",
    };
    this.layout = dockerLayout(root);
    this.resolver = new ImageLayerResolver(o.docker, root);
  }

  /** The Engine API client (the acting half of the agent uses it directly). */
  get docker(): Docker {
    return this.o.docker;
  }

  async listContainers(): Promise<string[]> {
    const list = await this.o.docker.listContainers({ all: true });
    // cri-dockerd's pod sandboxes run no code of the user's: never scored.
    return list.filter((c) => c.Labels?.[KUBE_LABELS.dockerType] !== "podsandbox").map((c) => c.Id);
  }

  async inspect(id: string): Promise<ContainerFacts | undefined> {
    try {
      const facts = parseContainerInspect(await this.o.docker.getContainer(id).inspect());
      if (facts.labels[KUBE_LABELS.dockerType] === "podsandbox") return undefined;
      const pod = podFromLabels(facts.labels);
      if (pod !== undefined) facts.pod = pod;
      // Layer directories are read, and checked, on overlay2 only.
      if (facts.driver !== "overlay2") facts.storageUnavailable = `storage driver ${facts.driver || "unknown"} is not overlay2`;
      return facts;
    } catch (err) {
      if (isEngineNotFound(err)) return undefined;
      throw err;
    }
  }

  async resolveImage(c: ContainerFacts): Promise<ResolvedImage | undefined> {
    try {
      return await this.resolver.resolve(c.imageId);
    } catch (err) {
      if (isEngineNotFound(err)) return undefined;
      throw err;
    }
  }

  async subscribe(h: RuntimeEventHandlers): Promise<RuntimeSubscription> {
    const stream = (await (this.o.events ?? this.o.docker).getEvents({ filters: { type: ["container"] } })) as NodeJS.ReadableStream & { destroy?: () => void };
    let pending = "";
    let done = false;
    stream.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      // One event is a few hundred bytes: a line without an end this long is not an event.
      if (pending.length > 1024 * 1024) pending = "";
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.trim() !== "") this.onLine(line, h);
      }
    });
    const lost = (why: string) => {
      if (done) return;
      done = true;
      h.lost(why);
    };
    stream.on("end", () => lost("end"));
    stream.on("error", (err: Error) => lost(err.message));
    return {
      close: () => {
        done = true;
        stream.destroy?.();
      },
    };
  }

  private onLine(line: string, h: RuntimeEventHandlers): void {
    let ev: { Type?: unknown; Action?: unknown; Actor?: { ID?: unknown } };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch {
      h.event({ id: "", change: "unparsable", action: "unparsable" });
      return;
    }
    if (ev.Type !== "container" || typeof ev.Action !== "string" || typeof ev.Actor?.ID !== "string") return;
    // "exec_start: sh -c …" carries the command after the colon.
    const action = ev.Action.split(":")[0] ?? ev.Action;
    if (action === "exec_die" || action === "exec_create" || action === "attach" || action === "resize" || action === "top") {
      h.event({ id: ev.Actor.ID, change: "ignored", action });
      return;
    }
    h.event({ id: ev.Actor.ID, change: action === "destroy" ? "removed" : "changed", action });
  }

  clearCaches(): void {
    this.resolver.clear();
  }

  close(): void {
    // dockerode keeps no connection of its own open between requests.
  }
}
