/**
 * The shadow containers on this node: created (never started here) from a shadow image with an
 * original container's configuration, so that a switchover only has to start one; found again by
 * their labels; removed when a newer shadow replaces them or their original goes away. A shadow
 * that has run (a switchover started it) is serving and is never removed here.
 */
import type Docker from "dockerode";
import { Code, ShadowError } from "../../common/errors.js";
import { isEngineNotFound } from "../../common/engine.js";
import type { Logger } from "../../common/log.js";
import { SERVICE_LABELS, SERVICE_PORT_ENV } from "./switchover/service-labels.js";

/** Labels on every shadow container (besides the original's own). */
export const SHADOW_CONTAINER_LABELS = {
  /** The original container's full id. */
  shadowOf: "shadowlayer.shadow-of",
  /** The rebuild job that made the shadow image. */
  job: "shadowlayer.job",
  /** The reference the shadow image was prepared from (registry@digest, or the local image id). */
  shadowImage: "shadowlayer.shadow-image",
} as const;

/** A shadow container as listed by the engine. */
export interface ShadowContainer {
  id: string;
  name: string;
  originalId: string;
  shadowImage: string;
  imageId: string;
  /** The engine's state: "created" until something starts it. */
  state: string;
}

/** What a shadow container is made from. */
export interface ShadowSource {
  /** The image to run: the registry reference by digest, or the local image id. */
  image: string;
  /** The reference recorded in the label (what the command named). */
  reference: string;
  job: string;
}

/** Docker's own bound is higher; this keeps `<name>-shadow` readable in tables. */
const MAX_NAME_BASE = 100;

/**
 * `<original name>-shadow`, keeping only what Docker allows in a name ([a-zA-Z0-9_.-], starting
 * with a letter or digit): names come from whoever created the original and may hold anything.
 */
export function shadowName(originalName: string, originalId: string, withId = false): string {
  const short = originalId.replace(/[^a-f0-9]/g, "").slice(0, 12);
  const safe = originalName
    .replace(/[^a-zA-Z0-9_.-]/g, "")
    .replace(/^[^a-zA-Z0-9]+/, "")
    .slice(0, MAX_NAME_BASE);
  if (safe === "") return `${short}-shadow`;
  return withId ? `${safe}-${short}-shadow` : `${safe}-shadow`;
}

/** The host settings copied from the original as they are (resources, security, network, mounts). */
const HOST_KEYS = [
  "Binds",
  "Mounts",
  "NetworkMode",
  "PortBindings",
  "PublishAllPorts",
  "RestartPolicy",
  "VolumesFrom",
  "Links",
  "CapAdd",
  "CapDrop",
  // Copied as it is: a privileged original gets a privileged shadow (the same trust, no more).
  "Privileged",
  "SecurityOpt",
  "ReadonlyRootfs",
  "MaskedPaths",
  "ReadonlyPaths",
  "Tmpfs",
  "ExtraHosts",
  "Dns",
  "DnsOptions",
  "DnsSearch",
  "Memory",
  "MemoryReservation",
  "MemorySwap",
  "MemorySwappiness",
  "NanoCpus",
  "CpuShares",
  "CpuPeriod",
  "CpuQuota",
  "CpusetCpus",
  "CpusetMems",
  "PidsLimit",
  "Ulimits",
  "BlkioWeight",
  "ShmSize",
  "OomKillDisable",
  "OomScoreAdj",
  "Devices",
  "DeviceCgroupRules",
  "DeviceRequests",
  "GroupAdd",
  "IpcMode",
  "PidMode",
  "UTSMode",
  "UsernsMode",
  "CgroupParent",
  "Sysctls",
  "LogConfig",
  "Init",
  "Runtime",
] as const satisfies ReadonlyArray<keyof Docker.HostConfig>;

/** Settings the inspect output has but the dockerode types leave out. */
interface StopSettings {
  StopSignal?: unknown;
  StopTimeout?: unknown;
}

/**
 * The create options of a shadow of `original`. Env and labels keep what the original set beyond
 * its image (the container's view merges the image's in), so the shadow image's own ENV and labels
 * apply; everything else is copied. Anonymous volumes are mounted by name, so data is shared.
 */
export function shadowCreateOptions(original: Docker.ContainerInspectInfo, originalImage: Docker.ImageInspectInfo | undefined, source: ShadowSource): Docker.ContainerCreateOptions {
  const c = original.Config;
  const imageEnv = new Set(originalImage?.Config?.Env ?? []);
  const imageLabels = originalImage?.Config?.Labels ?? {};
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.Labels ?? {})) if (imageLabels[k] !== v) labels[k] = v;
  Object.assign(labels, { [SHADOW_CONTAINER_LABELS.shadowOf]: original.Id, [SHADOW_CONTAINER_LABELS.job]: source.job, [SHADOW_CONTAINER_LABELS.shadowImage]: source.reference });
  let env = (c.Env ?? []).filter((e) => !imageEnv.has(e));
  // A managed service's shadow listens on the other port of the pair, so both fit on one loopback.
  const ownPort = c.Labels?.[SERVICE_LABELS.port];
  const otherPort = c.Labels?.[SERVICE_LABELS.shadowPort];
  if (c.Labels?.[SERVICE_LABELS.address] !== undefined && ownPort !== undefined && otherPort !== undefined) {
    labels[SERVICE_LABELS.port] = otherPort;
    labels[SERVICE_LABELS.shadowPort] = ownPort;
    env = [...env.filter((e) => !e.startsWith(`${SERVICE_PORT_ENV}=`)), `${SERVICE_PORT_ENV}=${otherPort}`];
  }

  const host: Docker.HostConfig = {};
  const from = original.HostConfig as Record<string, unknown>;
  for (const k of HOST_KEYS) {
    const v = from[k];
    if (v !== undefined && v !== null) (host as Record<string, unknown>)[k] = v;
  }
  // Inspect shows a legacy link as "/target:/original/alias"; create takes "target:alias".
  if (Array.isArray(host.Links)) host.Links = (host.Links as unknown[]).filter((l): l is string => typeof l === "string").map((l) => l.replace(/^\/([^:]+):\/[^/]+\/(.+)$/, "$1:$2"));
  const anonymous = anonymousVolumes(original);
  if (anonymous.length > 0) host.Binds = [...(host.Binds ?? []), ...anonymous];

  const stop = c as StopSettings;
  const net = original.HostConfig.NetworkMode ?? "";
  // The engine names a container's host after its id unless told otherwise; a shared namespace has none of its own.
  const ownHostname = c.Hostname !== "" && c.Hostname !== original.Id.slice(0, 12) && net !== "host" && !net.startsWith("container:");
  return {
    Image: source.image,
    Cmd: c.Cmd ?? undefined,
    ...(c.Entrypoint !== undefined && c.Entrypoint !== null ? { Entrypoint: c.Entrypoint } : {}),
    Env: env,
    WorkingDir: c.WorkingDir,
    User: c.User,
    Labels: labels,
    ...(c.ExposedPorts ? { ExposedPorts: c.ExposedPorts } : {}),
    ...(c.Healthcheck ? { Healthcheck: c.Healthcheck } : {}),
    ...(typeof stop.StopSignal === "string" && stop.StopSignal !== "" ? { StopSignal: stop.StopSignal } : {}),
    ...(typeof stop.StopTimeout === "number" ? { StopTimeout: stop.StopTimeout } : {}),
    Tty: c.Tty,
    OpenStdin: c.OpenStdin,
    StdinOnce: c.StdinOnce,
    ...(ownHostname ? { Hostname: c.Hostname, Domainname: c.Domainname } : {}),
    HostConfig: host,
  };
}

/** Volumes the engine made for the original without a name given (from its image's VOLUME): `name:/path`. */
function anonymousVolumes(original: Docker.ContainerInspectInfo): string[] {
  const covered = new Set<string>();
  for (const b of original.HostConfig.Binds ?? []) covered.add(b.split(":")[1] ?? "");
  for (const m of original.HostConfig.Mounts ?? []) covered.add(m.Target);
  return (original.Mounts ?? [])
    .filter((m) => m.Type === "volume" && m.Name !== undefined && m.Name !== "" && !covered.has(m.Destination))
    .map((m) => `${m.Name}:${m.Destination}${m.RW ? "" : ":ro"}`);
}

function fromListing(c: Docker.ContainerInfo): ShadowContainer {
  return {
    id: c.Id,
    name: (c.Names[0] ?? "").replace(/^\//, ""),
    originalId: c.Labels[SHADOW_CONTAINER_LABELS.shadowOf] ?? "",
    shadowImage: c.Labels[SHADOW_CONTAINER_LABELS.shadowImage] ?? "",
    imageId: c.ImageID,
    state: c.State,
  };
}

export class ShadowContainers {
  constructor(
    private readonly docker: Docker,
    private readonly log: Logger,
  ) {}

  /** The shadows of one original, or of every original when none is named. */
  async list(originalId?: string): Promise<ShadowContainer[]> {
    const label = originalId === undefined ? SHADOW_CONTAINER_LABELS.shadowOf : `${SHADOW_CONTAINER_LABELS.shadowOf}=${originalId}`;
    const list = await this.docker.listContainers({ all: true, filters: { label: [label] } });
    return list.map(fromListing);
  }

  /** Creates (does not start) a shadow of `original`; a name taken by another container gets the original's short id added. */
  async create(original: Docker.ContainerInspectInfo, source: ShadowSource): Promise<ShadowContainer> {
    const originalImage = await this.docker
      .getImage(original.Image)
      .inspect()
      .catch(() => undefined);
    const opts = shadowCreateOptions(original, originalImage, source);
    let name = shadowName(original.Name, original.Id);
    let created: Docker.Container;
    try {
      created = await this.docker.createContainer({ ...opts, name });
    } catch (err) {
      if (!isConflict(err)) throw err;
      name = shadowName(original.Name, original.Id, true);
      created = await this.docker.createContainer({ ...opts, name });
    }
    this.log.info({ container: original.Id, shadow: created.id, name, image: source.reference }, "shadow container created (not started)");
    return { id: created.id, name, originalId: original.Id, shadowImage: source.reference, imageId: "", state: "created" };
  }

  /** Removes a shadow that never ran; one that did (switched over) is left and reported false. */
  async remove(s: ShadowContainer, why: string): Promise<boolean> {
    if (s.state !== "created") {
      this.log.warn({ container: s.originalId, shadow: s.id, state: s.state, why }, "shadow container has run; left in place");
      return false;
    }
    try {
      await this.docker.getContainer(s.id).remove({ v: false });
    } catch (err) {
      if (!isEngineNotFound(err)) throw ShadowError.from(err, Code.Internal);
    }
    this.log.info({ container: s.originalId, shadow: s.id, name: s.name, why }, "shadow container removed");
    return true;
  }

  /** The original is gone (or found missing): its shadows that never ran go too. Returns how many. */
  async originalGone(originalId: string): Promise<number> {
    const shadows = await this.list(originalId);
    if (shadows.length === 0 || (await this.exists(originalId))) return 0;
    let n = 0;
    for (const s of shadows) if (await this.remove(s, "original removed")) n++;
    return n;
  }

  /** At start: removes the shadows whose original went away while the agent was not watching. */
  async sweep(): Promise<number> {
    const originals = new Set((await this.list()).map((s) => s.originalId).filter((id) => /^[a-f0-9]{64}$/.test(id)));
    let n = 0;
    for (const id of originals) n += await this.originalGone(id);
    return n;
  }

  private async exists(id: string): Promise<boolean> {
    try {
      await this.docker.getContainer(id).inspect();
      return true;
    } catch (err) {
      if (isEngineNotFound(err)) return false;
      throw err;
    }
  }
}

function isConflict(err: unknown): boolean {
  return typeof err === "object" && err !== null && "statusCode" in err && (err as { statusCode: unknown }).statusCode === 409;
}
