/**
 * containerd (with its CRI plugin) as a ContainerRuntime: the agent on a Kubernetes node.
 *
 * Design:
 * - Containers, images, content, snapshots, tasks and events come from containerd's own gRPC API
 *   in one namespace (`k8s.io`, the kubelet's, by default); every call carries the
 *   `containerd-namespace` header. Pods and their metadata (name, namespace, uid, labels,
 *   annotations) come from CRI (runtime.v1) on the same socket; a container's volumes are the
 *   bind mounts of the OCI spec containerd keeps with it (CRI's sandbox files left out: the list
 *   CRI's ContainerStatus gives, which is asked only when the spec does not read).
 * - A list pass (`listContainers` then `inspect(id, {listed})`) reads the container records once
 *   and, when an inspect first needs them, tasks, CRI containers and pods in three calls; each
 *   container then costs one Snapshots.Mounts. An inspect after an event reads everything afresh.
 * - A container's state is its task's (no task: CRI's state, else "created"); pod sandboxes
 *   (label `io.cri-containerd.kind=sandbox`, or ids CRI lists as sandboxes) are never listed.
 * - Layers are the image config's `rootfs.diff_ids` (config read from the content store through
 *   the image's index and manifest, each capped and digest-checked); the image id is the config
 *   digest, which is also Docker's image id for the same image. Layer directories come from the
 *   overlayfs snapshotter: Snapshots.Mounts of the container's snapshot gives upperdir and the
 *   lowerdirs (top first, one per layer), a layer's cache id is its snapshot id, and the chain is
 *   cross-checked against Snapshots.Stat parents, whose names must be the image's chain ids.
 *   Any other snapshotter: the layers are still listed, with no directories, and the container
 *   says why (`storageUnavailable`), never guessing.
 * - NOT_FOUND anywhere while reading one container (it, its snapshot or its pod vanished
 *   mid-scan) makes inspect answer undefined; the collector counts it and goes on.
 * - Events: Events.Subscribe filtered to the namespace's /containers/ and /tasks/ topics, the Any
 *   payload decoded by type URL into "changed" or "removed" for one container id.
 */
import { existsSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { callServerStream, callUnary } from "../../../common/grpc.js";
import { Code, ShadowError } from "../../../common/errors.js";
import { chainIds } from "../../layers/chain-id.js";
import type { ImageLayer, ResolvedImage } from "../../layers/image-layers.js";
import { stepsForLayers, type ContainerFacts, type MountFact, type PodFacts } from "../engine-facts.js";
import type { ContainerRuntime, RuntimeEventHandlers, RuntimeInfo, RuntimeSubscription, StorageLayout } from "../runtime.js";
import { Containers, type Container } from "../../../proto/gen/containerd/services/containers/v1/containers_pb.js";
import { Content } from "../../../proto/gen/containerd/services/content/v1/content_pb.js";
import { Events } from "../../../proto/gen/containerd/services/events/v1/events_pb.js";
import { Images } from "../../../proto/gen/containerd/services/images/v1/images_pb.js";
import { Introspection } from "../../../proto/gen/containerd/services/introspection/v1/introspection_pb.js";
import { Snapshots } from "../../../proto/gen/containerd/services/snapshots/v1/snapshots_pb.js";
import { Tasks } from "../../../proto/gen/containerd/services/tasks/v1/tasks_pb.js";
import { Version } from "../../../proto/gen/containerd/services/version/v1/version_pb.js";
import { Status as TaskStatus, type Process } from "../../../proto/gen/containerd/types/task/task_pb.js";
import { ContainerState, type Container as CriContainer, type PodSandbox } from "../../../proto/gen/runtime/v1/api_pb.js";
import { callError, grpcDetails, isNotFound, isUnimplemented, isUnreachable, socketPath, unixClient } from "./client.js";
import { CriClient } from "./cri.js";
import {
  boundMap,
  decodeEvent,
  eventFilters,
  isConfigMedia,
  isDigest,
  isIndexMedia,
  isManifestMedia,
  isSaneId,
  manifestConfig,
  MAX_BLOB_BYTES,
  MAX_LAYERS,
  parseDescriptor,
  parseImageConfig,
  parseJsonBlob,
  parseSnapshotMounts,
  specMounts,
  pickManifest,
  snapshotIdOfDir,
  verifyDigest,
  DIGEST_RE,
  ID_RE,
} from "./parse.js";

export const DEFAULT_CONTAINERD_SOCKET = "/run/containerd/containerd.sock";
/** The kubelet's namespace in containerd. */
export const DEFAULT_CONTAINERD_NAMESPACE = "k8s.io";
export const OVERLAYFS = "overlayfs";
/** The label CRI puts on its containerd containers: "sandbox" or "container". */
export const CRI_KIND_LABEL = "io.cri-containerd.kind";

const MAX_MOUNTS = 256;
/** Far more than a node runs (the kubelet's default is 110 pods): a longer list is not believed. */
const MAX_CONTAINERS = 65_536;
const MAX_CACHE = 4096;

/** How a layer directory is named on containerd: by snapshot id, both as listed and as mounted. */
export const containerdLayout: StorageLayout = {
  dirKey: snapshotIdOfDir,
  mountDirKey: snapshotIdOfDir,
  isImageEntry: () => true,
};

/** What connectContainerd found, for the runtime's info. */
export interface ContainerdRuntimeOptions {
  socket: string;
  namespace: string;
  /** The snapshotter root as the agent sees it (the dir holding `snapshots/`); undefined: containerd's paths as they are. */
  snapshotsRoot?: string;
  version: string;
  rootDir: string;
  timeoutMs: number;
}

/** A bounded map: the oldest entry goes when full. */
class Bounded<K, V> extends Map<K, V> {
  constructor(private readonly max: number) {
    super();
  }

  override set(k: K, v: V): this {
    if (!this.has(k) && this.size >= this.max) {
      const first = this.keys().next();
      if (first.done !== true) this.delete(first.value);
    }
    return super.set(k, v);
  }
}

/**
 * What one `listContainers()` read in a few calls (containers, tasks, CRI containers and pods),
 * reused by the inspects of that pass instead of ~6 calls per container; an inspect after an
 * event asks afresh.
 */
interface ListPass {
  at: number;
  containers: Map<string, Container>;
  /** Read when the pass's first inspect needs them (a pass with nothing new reads only the list). */
  lists: Promise<PassLists> | undefined;
  /** Image name -> config digest, looked up once per pass. */
  images: Map<string, Promise<string | { problem: string }>>;
}

interface PassLists {
  /** undefined: that list failed, so each inspect asks for itself. */
  tasks: Map<string, Process> | undefined;
  cri: Map<string, CriContainer> | undefined;
  sandboxes: Map<string, PodSandbox> | undefined;
}

/**
 * containerd leaves the pod sandboxes out of its list itself (half the records on a node; a
 * container without the label, one not made by CRI, is kept: `!=` matches a missing label).
 */
const NOT_SANDBOX = [`labels."${CRI_KIND_LABEL}"!=sandbox`];

/** A pass's lists are used for this long (a pass over thousands of containers takes seconds). */
const PASS_MS = 30_000;

interface ContainerMeta {
  imageName: string;
  snapshotter: string;
  snapshotKey: string;
}

type TypedMethod<I extends DescMessage, O extends DescMessage> = DescMethod & { input: I; output: O };

function taskState(p: Process | undefined, criState: ContainerState | undefined): { state: string; pid: number } {
  if (p === undefined) {
    if (criState === ContainerState.CONTAINER_EXITED) return { state: "exited", pid: 0 };
    return { state: "created", pid: 0 };
  }
  switch (p.status) {
    case TaskStatus.RUNNING:
      return { state: "running", pid: p.pid };
    case TaskStatus.PAUSED:
    case TaskStatus.PAUSING:
      return { state: "paused", pid: p.pid };
    case TaskStatus.CREATED:
      return { state: "created", pid: p.pid };
    case TaskStatus.STOPPED:
      return { state: "exited", pid: 0 };
    default:
      return { state: "unknown", pid: 0 };
  }
}

function cgroupVersion(): string {
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) return "2";
  if (existsSync("/sys/fs/cgroup/memory") || existsSync("/sys/fs/cgroup/cpu")) return "1";
  return "";
}

export class ContainerdRuntime implements ContainerRuntime {
  readonly info: RuntimeInfo;
  readonly layout: StorageLayout = containerdLayout;
  readonly cri: CriClient;
  private readonly clients: {
    containers: grpc.Client;
    images: grpc.Client;
    content: grpc.Client;
    snapshots: grpc.Client;
    tasks: grpc.Client;
    events: grpc.Client;
    version: grpc.Client;
  };
  private readonly md: Record<string, string>;
  /** Image target digest -> config digest (immutable). */
  private readonly configOf = new Bounded<string, string>(MAX_CACHE);
  /** Image name -> its target digest as last read (to find the image's other names without reading it again). */
  private readonly targetOf = new Bounded<string, string>(MAX_CACHE);
  private readonly resolved = new Bounded<string, ResolvedImage>(256);
  private readonly pods = new Bounded<string, PodFacts>(MAX_CACHE);
  private readonly meta = new Bounded<string, ContainerMeta>(MAX_CACHE);
  /** CRI volume mounts per container: fixed at its creation. */
  private readonly criMounts = new Bounded<string, MountFact[]>(MAX_CACHE);
  private pass: ListPass | undefined;

  constructor(private readonly o: ContainerdRuntimeOptions) {
    this.info = { kind: "containerd", version: o.version, driver: OVERLAYFS, rootDir: o.rootDir, cgroupVersion: cgroupVersion(), socket: socketPath(o.socket) };
    this.md = { "containerd-namespace": o.namespace };
    this.clients = {
      containers: unixClient(Containers, o.socket),
      images: unixClient(Images, o.socket),
      content: unixClient(Content, o.socket),
      snapshots: unixClient(Snapshots, o.socket),
      tasks: unixClient(Tasks, o.socket),
      events: unixClient(Events, o.socket),
      version: unixClient(Version, o.socket),
    };
    this.cri = new CriClient(o.socket, { deadlineMs: o.timeoutMs });
  }

  get namespace(): string {
    return this.o.namespace;
  }

  private async call<I extends DescMessage, O extends DescMessage>(client: grpc.Client, method: TypedMethod<I, O>, req: MessageInitShape<I>): Promise<MessageShape<O>> {
    try {
      return await callUnary(client, method, req, { deadlineMs: this.o.timeoutMs, metadata: this.md });
    } catch (err) {
      throw callError(`containerd ${method.parent.name}.${method.name}`, err);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Listing

  async listContainers(): Promise<string[]> {
    const all = await this.allContainers();
    const pass: ListPass = { at: Date.now(), containers: new Map(all.map((c) => [c.id, c])), lists: undefined, images: new Map() };
    this.pass = pass;
    // Containers not read before will be inspected at once: their lists are asked for meanwhile.
    if (all.some((c) => !this.meta.has(c.id))) void this.passLists(pass);
    // CRI labels every sandbox it makes; an inspect also checks the pass's sandbox list.
    return all.filter((c) => isSaneId(c.id) && c.labels[CRI_KIND_LABEL] !== "sandbox").map((c) => c.id);
  }

  private passLists(pass: ListPass): Promise<PassLists> {
    pass.lists ??= Promise.all([this.listTasks(), this.listCri(), this.listSandboxes()]).then(([tasks, cri, sandboxes]) => ({ tasks, cri, sandboxes }));
    return pass.lists;
  }

  private async listSandboxes(): Promise<Map<string, PodSandbox> | undefined> {
    try {
      return new Map((await this.cri.listPodSandbox()).map((p) => [p.id, p]));
    } catch {
      // CRI busy or restarting: the sandbox label still tells, and each inspect asks for its pod.
      return undefined;
    }
  }

  private async listCri(): Promise<Map<string, CriContainer> | undefined> {
    try {
      return new Map((await this.cri.listContainers()).map((c) => [c.id, c]));
    } catch {
      return undefined;
    }
  }

  private async listTasks(): Promise<Map<string, Process> | undefined> {
    try {
      const r = await this.call(this.clients.tasks, Tasks.method.list, {});
      // containerd's List names each task's init process by its container id (`id`, container_id unset).
      return new Map(r.tasks.map((t) => [t.containerId || t.id, t]));
    } catch {
      return undefined;
    }
  }

  /** Containers.ListStream (one message per container: no reply-size limit), List on older daemons. */
  private allContainers(): Promise<Container[]> {
    return new Promise<Container[]>((resolve, reject) => {
      const out: Container[] = [];
      const stream = callServerStream(this.clients.containers, Containers.method.listStream, { filters: NOT_SANDBOX }, { metadata: this.md, deadlineMs: Math.max(this.o.timeoutMs, 30_000) });
      let failed = false;
      stream.on("data", (m: { container?: Container }) => {
        if (failed || m.container === undefined) return;
        out.push(m.container);
        if (out.length > MAX_CONTAINERS) {
          failed = true;
          stream.cancel();
          reject(new ShadowError(Code.InvalidArgument, `containerd lists more than ${MAX_CONTAINERS} containers in namespace ${this.o.namespace}`));
        }
      });
      stream.on("error", (err: unknown) => {
        if (failed) return;
        if (isUnimplemented(err)) {
          this.call(this.clients.containers, Containers.method.list, { filters: NOT_SANDBOX }).then((r) => resolve(r.containers), reject);
        } else {
          reject(callError("containerd Containers.ListStream", err));
        }
      });
      stream.on("end", () => resolve(out));
    });
  }

  // ---------------------------------------------------------------------------------------------
  // One container

  async inspect(id: string, opts: { listed?: boolean } = {}): Promise<ContainerFacts | undefined> {
    if (!isSaneId(id)) return undefined;
    const pass = opts.listed === true && this.pass !== undefined && Date.now() - this.pass.at < PASS_MS ? this.pass : undefined;
    let ctr: Container | undefined = pass?.containers.get(id);
    if (ctr === undefined) {
      try {
        ctr = (await this.call(this.clients.containers, Containers.method.get, { id })).container;
      } catch (err) {
        if (isGone(err)) return undefined;
        throw err;
      }
    }
    if (ctr === undefined || ctr.id !== id) return undefined;
    if (ctr.labels[CRI_KIND_LABEL] === "sandbox") return undefined;
    const lists = pass === undefined ? undefined : await this.passLists(pass);
    if (lists?.sandboxes?.has(id) === true) return undefined;

    const snapshotter = ctr.snapshotter;
    const snapshotKey = ctr.snapshotKey;
    this.meta.set(id, { imageName: ctr.image, snapshotter, snapshotKey });

    const imageName = ctr.image;
    let image = pass?.images.get(imageName);
    if (image === undefined) {
      image = this.imageIdOf(imageName);
      pass?.images.set(imageName, image);
    }
    const [task, cri, storage, imageId] = await Promise.all([
      lists?.tasks !== undefined ? lists.tasks.get(id) : this.task(id),
      this.criFacts(ctr, lists?.cri),
      this.storage(snapshotter, snapshotKey),
      image,
    ]);
    if (cri === "gone" || storage === "gone") return undefined;

    let pod: PodFacts | undefined;
    if (cri !== undefined && cri.sandboxId !== "") {
      const listedPod = lists?.sandboxes?.get(cri.sandboxId);
      const p = listedPod !== undefined ? this.podFacts(listedPod) : await this.pod(cri.sandboxId);
      if (p === "gone") return undefined;
      pod = p;
    }
    const { state, pid } = taskState(task, cri?.state);
    const criName = cri?.name ?? "";
    const facts: ContainerFacts = {
      id,
      name: pod !== undefined && criName !== "" ? `${pod.name}/${criName}` : criName !== "" ? criName : id,
      image: ctr.image.slice(0, 1024),
      imageId: typeof imageId === "string" ? imageId : "",
      state,
      pid,
      labels: boundMap(ctr.labels),
      driver: snapshotter,
      upperDir: storage.upperDir,
      lowerDirs: storage.lowerDirs,
      mounts: cri?.mounts ?? [],
    };
    if (pod !== undefined) facts.pod = pod;
    if (storage.unavailable !== undefined) facts.storageUnavailable = storage.unavailable;
    // An image whose index, manifest or config cannot be trusted: no layers rather than wrong ones.
    else if (typeof imageId !== "string") facts.storageUnavailable = `image ${ctr.image.slice(0, 200)}: ${imageId.problem}`;
    return facts;
  }

  private async task(id: string): Promise<Process | undefined> {
    try {
      return (await this.call(this.clients.tasks, Tasks.method.get, { containerId: id })).process;
    } catch (err) {
      if (isGone(err)) return undefined;
      throw err;
    }
  }

  /** CRI's view of a container: name, pod, state, volume mounts; undefined when CRI does not manage it. */
  private async criFacts(ctr: Container, passList: Map<string, CriContainer> | undefined): Promise<{ name: string; sandboxId: string; state: ContainerState; mounts: MountFact[] } | undefined | "gone"> {
    const id = ctr.id;
    let listed: CriContainer | undefined;
    if (passList !== undefined) listed = passList.get(id);
    else {
      try {
        listed = (await this.cri.listContainers({ id })).find((c) => c.id === id);
      } catch (err) {
        if (isUnimplemented(err)) return undefined;
        throw err;
      }
    }
    // Not a CRI container (created with ctr or another client in the namespace): no pod.
    if (listed === undefined) return undefined;
    // The volumes CRI mounted, from the spec containerd keeps with the container (no call); CRI's
    // own list when the spec cannot be read.
    let mounts = this.criMounts.get(id) ?? specMounts(ctr.spec, MAX_MOUNTS)?.map((m): MountFact => ({ type: "bind", name: "", ...m }));
    if (mounts !== undefined) this.criMounts.set(id, mounts);
    else {
      try {
        const st = await this.cri.containerStatus(id);
        mounts = (st.status?.mounts ?? []).slice(0, MAX_MOUNTS).map((m) => ({
          type: "bind",
          name: "",
          source: m.hostPath.slice(0, 4096),
          destination: m.containerPath.slice(0, 4096),
          rw: !m.readonly,
        }));
        this.criMounts.set(id, mounts);
      } catch (err) {
        if (isGone(err)) return "gone";
        throw err;
      }
    }
    const sandboxId = isSaneId(listed.podSandboxId) ? listed.podSandboxId : "";
    return { name: (listed.metadata?.name ?? "").slice(0, 253), sandboxId, state: listed.state, mounts };
  }

  /** A pod's facts from CRI; pod sandbox labels and annotations are fixed at creation, so cached. */
  private async pod(sandboxId: string): Promise<PodFacts | "gone"> {
    const hit = this.pods.get(sandboxId);
    if (hit !== undefined) return hit;
    let st;
    try {
      st = (await this.cri.podSandboxStatus(sandboxId)).status;
    } catch (err) {
      if (isGone(err)) return "gone";
      throw err;
    }
    if (st === undefined) return "gone";
    return this.podFacts({ id: sandboxId, metadata: st.metadata, labels: st.labels, annotations: st.annotations });
  }

  /** PodFacts from a sandbox as ListPodSandbox or PodSandboxStatus gives it (cached: fixed at creation). */
  private podFacts(sb: Pick<PodSandbox, "id" | "metadata" | "labels" | "annotations">): PodFacts {
    const hit = this.pods.get(sb.id);
    if (hit !== undefined) return hit;
    const md = sb.metadata;
    const pod: PodFacts = {
      name: (md?.name ?? "").slice(0, 253),
      namespace: (md?.namespace ?? "").slice(0, 253),
      uid: (md?.uid ?? "").slice(0, 128),
      sandboxId: sb.id,
      labels: boundMap(sb.labels),
      annotations: boundMap(sb.annotations),
    };
    this.pods.set(sb.id, pod);
    return pod;
  }

  /** The container's layer directories from its snapshot (overlayfs only). */
  private async storage(snapshotter: string, key: string): Promise<{ upperDir: string; lowerDirs: string[]; unavailable?: string } | "gone"> {
    if (snapshotter !== OVERLAYFS) {
      return { upperDir: "", lowerDirs: [], unavailable: `snapshotter ${snapshotter === "" ? "(none)" : snapshotter} is not overlayfs: layer directories unknown` };
    }
    if (key === "" || key.length > 4096) return { upperDir: "", lowerDirs: [], unavailable: "container has no snapshot: layer directories unknown" };
    let mounts;
    try {
      mounts = (await this.call(this.clients.snapshots, Snapshots.method.mounts, { snapshotter, key })).mounts;
    } catch (err) {
      if (isGone(err)) return "gone";
      throw err;
    }
    try {
      return parseSnapshotMounts(mounts, this.o.snapshotsRoot);
    } catch (err) {
      return { upperDir: "", lowerDirs: [], unavailable: `cannot read the container's snapshot mounts: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  /** The config digest of a named image ("" when the image is gone); a problem when its blobs do not check out. */
  private async imageIdOf(name: string): Promise<string | { problem: string }> {
    if (name === "" || name.length > 1024) return "";
    let target;
    try {
      target = (await this.call(this.clients.images, Images.method.get, { name })).image?.target;
    } catch (err) {
      if (isGone(err)) return "";
      throw err;
    }
    if (target === undefined || !isDigest(target.digest)) return "";
    this.targetOf.set(name, target.digest);
    const hit = this.configOf.get(target.digest);
    if (hit !== undefined) return hit;
    try {
      const cfg = await this.configDigest({ mediaType: target.mediaType, digest: target.digest, size: Number(target.size) }, 0);
      this.configOf.set(target.digest, cfg);
      return cfg;
    } catch (err) {
      if (isGone(err)) return "";
      if (err instanceof ShadowError && err.code === Code.InvalidArgument) return { problem: err.message };
      throw err;
    }
  }

  /** Follows index -> manifest -> config descriptor, each blob capped and digest-checked. */
  private async configDigest(d: { mediaType: string; digest: string; size: number }, depth: number): Promise<string> {
    const desc = parseDescriptor(d, `image ${d.digest.slice(0, 80)} target`);
    if (isConfigMedia(desc.mediaType)) return desc.digest;
    if (depth > 2) throw new ShadowError(Code.InvalidArgument, `image ${desc.digest}: indexes nested more than 2 deep`);
    const raw = parseJsonBlob(await this.readBlob(desc.digest, desc.size), `blob ${desc.digest}`);
    if (isIndexMedia(desc.mediaType)) return this.configDigest(pickManifest(raw), depth + 1);
    if (isManifestMedia(desc.mediaType)) return manifestConfig(raw).digest;
    throw new ShadowError(Code.InvalidArgument, `image target ${desc.digest} has media type "${desc.mediaType.slice(0, 80)}", not an index or manifest`);
  }

  /** Reads one blob from the content store (at most MAX_BLOB_BYTES) and checks its digest. */
  readBlob(digest: string, expectedSize?: number): Promise<Uint8Array> {
    if (!DIGEST_RE.test(digest)) return Promise.reject(new ShadowError(Code.InvalidArgument, `not a sha256 digest: ${digest.slice(0, 80)}`));
    if (expectedSize !== undefined && expectedSize > MAX_BLOB_BYTES) {
      return Promise.reject(new ShadowError(Code.InvalidArgument, `blob ${digest} is ${expectedSize} bytes, more than the ${MAX_BLOB_BYTES} read`));
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      const chunks: Uint8Array[] = [];
      let total = 0;
      let failed = false;
      // Ask for one byte more than the cap: a longer blob is seen as such, never read whole.
      const stream = callServerStream(this.clients.content, Content.method.read, { digest, size: BigInt(MAX_BLOB_BYTES + 1) }, { metadata: this.md, deadlineMs: Math.max(this.o.timeoutMs, 30_000) });
      stream.on("data", (m: { data: Uint8Array }) => {
        if (failed) return;
        total += m.data.length;
        if (total > MAX_BLOB_BYTES) {
          failed = true;
          stream.cancel();
          reject(new ShadowError(Code.InvalidArgument, `blob ${digest} is larger than ${MAX_BLOB_BYTES} bytes`));
          return;
        }
        chunks.push(m.data);
      });
      stream.on("error", (err: unknown) => {
        if (!failed) reject(callError(`containerd Content.Read ${digest}`, err));
        failed = true;
      });
      stream.on("end", () => {
        if (failed) return;
        const bytes = Buffer.concat(chunks);
        try {
          verifyDigest(bytes, digest, "blob");
          resolve(bytes);
        } catch (err) {
          reject(err);
        }
      });
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Images

  async resolveImage(c: ContainerFacts): Promise<ResolvedImage | undefined> {
    if (!isDigest(c.imageId)) return undefined;
    const withDirs = c.driver === OVERLAYFS && c.storageUnavailable === undefined;
    const key = `${c.imageId}|${withDirs ? c.driver : ""}`;
    const hit = this.resolved.get(key);
    if (hit !== undefined && (!withDirs || sameChain(hit, c))) return hit;

    let config;
    try {
      config = parseImageConfig(parseJsonBlob(await this.readBlob(c.imageId), `image config ${c.imageId}`));
    } catch (err) {
      if (isGone(err)) return undefined;
      throw err;
    }
    const { diffIds, history } = config;
    const chains = chainIds(diffIds);
    const steps = stepsForLayers(history, diffIds.length);
    const meta = this.meta.get(c.id);

    let dirs: string[] | undefined;
    let problem: string | undefined;
    // One round of requests: the parent chain's snapshots, their sizes and the image's names at once.
    const checkChain = withDirs && meta !== undefined && c.lowerDirs.length === diffIds.length;
    const [walk, usages, tags] = await Promise.all([
      checkChain ? this.parentChain(meta.snapshotter, meta.snapshotKey, chains) : undefined,
      checkChain ? this.usages(meta.snapshotter, chains) : chains.map(() => 0n),
      meta === undefined ? [] : this.tagsOf(meta.imageName),
    ]);
    if (withDirs) {
      if (c.lowerDirs.length !== diffIds.length) {
        problem = `the container's snapshot has ${c.lowerDirs.length} lower layers, its image ${c.imageId} has ${diffIds.length}`;
      } else {
        if (walk === "gone") return undefined;
        const want = [...chains].reverse();
        if (walk !== undefined && walk.join() !== want.join()) {
          problem = `the container's snapshot parents [${walk.map(short).join(", ")}] are not the image's chain ids [${want.map(short).join(", ")}]`;
        } else {
          // lowerdirs are top first; layers are bottom first.
          dirs = [...c.lowerDirs].reverse();
        }
      }
    }
    if (problem !== undefined) c.storageProblem = problem;

    const sizes = dirs !== undefined ? usages : chains.map(() => 0n);
    const layers = diffIds.map((diffId, i): ImageLayer => {
      const dir = dirs?.[i] ?? "";
      const step = steps[i];
      return {
        diffId,
        chainId: chains[i] ?? diffId,
        cacheId: dir === "" ? "" : snapshotIdOfDir(dir),
        dir,
        sizeBytes: sizes[i] ?? 0n,
        createdBy: step?.createdBy ?? "",
        created: step?.created ?? "",
        comment: step?.comment ?? "",
      };
    });
    const resolved: ResolvedImage = {
      id: c.imageId,
      tags,
      driver: c.driver,
      layers,
      historySource: history.length > 0 ? "imagedb" : "none",
    };
    // A chain that did not check out is not kept: the next container of the image is checked anew.
    if (problem === undefined) this.resolved.set(key, resolved);
    return resolved;
  }

  /**
   * Names of the container's snapshot parents, top first, as containerd links them; undefined when
   * containerd cannot say. The snapshot and every expected parent (the image's chain ids) are
   * asked for at once, then the links are followed: a parent that is not the expected one ends
   * the walk there (and the chain will not match).
   */
  private async parentChain(snapshotter: string, key: string, chains: readonly string[]): Promise<string[] | undefined | "gone"> {
    const stat = async (k: string) => (await this.call(this.clients.snapshots, Snapshots.method.stat, { snapshotter, key: k })).info;
    let top;
    let parents;
    try {
      [top, parents] = await Promise.all([stat(key), Promise.all(chains.slice(0, MAX_LAYERS).map((k) => stat(k).catch((err: unknown) => (isGone(err) ? undefined : Promise.reject(err)))))]);
    } catch (err) {
      if (isGone(err)) return "gone";
      if (isUnimplemented(err)) return undefined;
      throw err;
    }
    if (top === undefined) return undefined;
    const byName = new Map<string, string>();
    chains.slice(0, MAX_LAYERS).forEach((k, i) => {
      const info = parents[i];
      if (info !== undefined && info.name === k) byName.set(k, info.parent);
    });
    const names: string[] = [];
    let cur = top.parent;
    while (cur !== "" && names.length <= MAX_LAYERS) {
      names.push(cur.slice(0, 200));
      const next = byName.get(cur);
      if (next === undefined) break;
      byName.delete(cur);
      cur = next;
    }
    return names;
  }

  private async usages(snapshotter: string, chains: readonly string[]): Promise<bigint[]> {
    return Promise.all(
      chains.map(async (key) => {
        try {
          const u = await this.call(this.clients.snapshots, Snapshots.method.usage, { snapshotter, key });
          return u.size > 0n ? u.size : 0n;
        } catch {
          return 0n;
        }
      }),
    );
  }

  /** The image's names (repo:tag) pointing at the same target; digests and ids left out. */
  private async tagsOf(name: string): Promise<string[]> {
    try {
      // The container's inspect read the image's target just before.
      const digest = this.targetOf.get(name) ?? (await this.call(this.clients.images, Images.method.get, { name })).image?.target?.digest;
      if (digest === undefined || !isDigest(digest)) return [];
      const all = (await this.call(this.clients.images, Images.method.list, { filters: [`target.digest==${digest}`] })).images;
      return all
        .map((i) => i.name)
        .filter((n) => n !== "" && n.length <= 512 && !n.includes("@") && !n.startsWith("sha256:"))
        .slice(0, 64);
    } catch {
      return [];
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Events

  async subscribe(h: RuntimeEventHandlers): Promise<RuntimeSubscription> {
    // The stream has no "open" signal until the first event: a version call proves the socket answers.
    await this.call(this.clients.version, Version.method.version, {});
    const stream = callServerStream(this.clients.events, Events.method.subscribe, { filters: eventFilters(this.o.namespace) }, { metadata: this.md });
    let done = false;
    const lost = (why: string) => {
      if (done) return;
      done = true;
      h.lost(why);
    };
    stream.on("data", (env: { namespace: string; topic: string; event?: { typeUrl: string; value: Uint8Array } }) => {
      if (done || env.namespace !== this.o.namespace) return;
      const e = decodeEvent(env.topic, env.event);
      if (e === undefined) return;
      if (e.change === "removed") this.meta.delete(e.id);
      h.event(e);
    });
    stream.on("error", (err: unknown) => lost(`containerd event stream failed: ${grpcDetails(err)}`));
    stream.on("end", () => lost("containerd event stream ended"));
    return {
      close: () => {
        done = true;
        stream.cancel();
      },
    };
  }

  clearCaches(): void {
    this.configOf.clear();
    this.targetOf.clear();
    this.resolved.clear();
    this.pods.clear();
    this.meta.clear();
    this.criMounts.clear();
    this.pass = undefined;
  }

  close(): void {
    for (const c of Object.values(this.clients)) c.close();
    this.cri.close();
  }
}

function short(d: string): string {
  return d.replace(/^sha256:/, "").slice(0, 12);
}

/** A cached image's directories are the container's (the same committed snapshots). */
function sameChain(img: ResolvedImage, c: ContainerFacts): boolean {
  const dirs = img.layers.map((l) => l.dir).reverse();
  return dirs.length === c.lowerDirs.length && dirs.every((d, i) => d === c.lowerDirs[i]);
}

/** NOT_FOUND from containerd or CRI (as a gRPC error or our ShadowError). */
function isGone(err: unknown): boolean {
  if (err instanceof ShadowError) return err.code === Code.NotFound;
  return isNotFound(err);
}

// -----------------------------------------------------------------------------------------------
// Connecting

export interface ConnectContainerdOptions {
  socket: string;
  /** containerd namespace; the kubelet's `k8s.io` by default. */
  namespace?: string;
  /**
   * The overlayfs snapshotter root as mounted in the agent (the directory holding `snapshots/`;
   * the `snapshots` directory itself is accepted too). Default: containerd's own path, as it
   * reports it (`<root>/io.containerd.snapshotter.v1.overlayfs`), used as it is.
   */
  snapshotsDir?: string;
  timeoutMs?: number;
}

/** The how-to for a socket that is absent or does not answer. */
export function socketHowTo(socket: string): string {
  return (
    `start containerd, or pass --containerd-socket <path> with the socket containerd listens on ` +
    `(its config's [grpc] address) and mount the host's socket into the agent ` +
    `(e.g. -v ${socket}:${socket}); on a Docker host use --runtime docker`
  );
}

/** The how-to for a containerd whose CRI plugin does not answer. */
export function criHowTo(socket: string): string {
  return (
    `containerd on ${socket} answers but its CRI plugin does not: remove "cri" from disabled_plugins in its config ` +
    `(/etc/containerd/config.toml; Docker's own containerd disables it) and restart containerd, ` +
    `or pass --containerd-socket <path> for the kubelet's containerd; on a Docker host use --runtime docker`
  );
}

/**
 * Dials containerd on a unix socket, checks that containerd (Version) and its CRI plugin
 * (RuntimeService.Version) both answer, and finds the overlayfs snapshotter's root.
 */
export async function connectContainerd(o: ConnectContainerdOptions): Promise<ContainerdRuntime> {
  const namespace = o.namespace ?? DEFAULT_CONTAINERD_NAMESPACE;
  if (!ID_RE.test(namespace)) throw new ShadowError(Code.InvalidArgument, `containerd namespace "${namespace.slice(0, 80)}" is not a valid namespace name`);
  const timeoutMs = o.timeoutMs ?? 5000;
  const path = socketPath(o.socket);
  if (!path.startsWith("/")) throw new ShadowError(Code.InvalidArgument, `--containerd-socket must be an absolute path to a unix socket, got "${o.socket}"`);
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new ShadowError(Code.EngineUnavailable, `containerd socket ${path} not found (--runtime containerd, --containerd-socket ${path}): ${socketHowTo(path)}`);
  }
  if (!st.isSocket()) throw new ShadowError(Code.EngineUnavailable, `--containerd-socket ${path} is not a unix socket: ${socketHowTo(path)}`);

  const md = { "containerd-namespace": namespace };
  const version = unixClient(Version, path);
  const introspection = unixClient(Introspection, path);
  const cri = new CriClient(path, { deadlineMs: timeoutMs });
  try {
    let v;
    try {
      v = await callUnary(version, Version.method.version, {}, { deadlineMs: timeoutMs, metadata: md });
    } catch (err) {
      const d = grpcDetails(err);
      if (/EACCES|permission denied/i.test(d)) {
        throw new ShadowError(Code.PermissionDenied, `cannot open containerd socket ${path} (--containerd-socket): permission denied; run the agent as root or give it access to the socket`, { cause: err });
      }
      if (isUnimplemented(err)) {
        throw new ShadowError(Code.EngineUnavailable, `${path} answers gRPC but is not containerd (no containerd.services.version.v1.Version): check --containerd-socket`, { cause: err });
      }
      const docker = /docker\.sock$/.test(path) ? " (that looks like Docker's API socket: use --runtime docker for it)" : "";
      throw new ShadowError(Code.EngineUnavailable, `containerd does not answer on ${path}${docker} (${isUnreachable(err) ? "unreachable" : d}): ${socketHowTo(path)}`, { cause: err });
    }
    try {
      await cri.version();
    } catch (err) {
      const cause = err instanceof ShadowError && err.cause !== undefined ? err.cause : err;
      if (isUnimplemented(cause)) throw new ShadowError(Code.FailedPrecondition, criHowTo(path), { cause: err });
      throw new ShadowError(Code.EngineUnavailable, `containerd's CRI plugin on ${path} does not answer (${grpcDetails(cause)}): ${criHowTo(path)}`, { cause: err });
    }

    let hostRoot = "";
    try {
      const plugins = await callUnary(introspection, Introspection.method.plugins, { filters: ["type==io.containerd.snapshotter.v1"] }, { deadlineMs: timeoutMs, metadata: md });
      const ov = plugins.plugins.find((p) => p.id === OVERLAYFS);
      const r = ov?.exports["root"];
      if (r !== undefined && r.startsWith("/") && r.length < 4096) hostRoot = r;
    } catch {
      hostRoot = "";
    }
    let snapshotsRoot: string | undefined;
    if (o.snapshotsDir !== undefined && o.snapshotsDir !== "") {
      const d = o.snapshotsDir.replace(/\/+$/, "");
      if (!d.startsWith("/")) throw new ShadowError(Code.InvalidArgument, `the containerd snapshots directory must be an absolute path, got "${o.snapshotsDir}"`);
      snapshotsRoot = basename(d) === "snapshots" ? dirname(d) : d;
    }
    const rootDir = hostRoot.endsWith("/io.containerd.snapshotter.v1.overlayfs") ? dirname(hostRoot) : "";
    return new ContainerdRuntime({ socket: path, namespace, ...(snapshotsRoot === undefined ? {} : { snapshotsRoot }), version: v.version, rootDir, timeoutMs: Math.max(timeoutMs, 10_000) });
  } finally {
    version.close();
    introspection.close();
    cri.close();
  }
}
