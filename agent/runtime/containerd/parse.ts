/**
 * Pure parsers for what containerd and CRI hand the agent: overlay mount options (snapshot
 * directories), OCI/Docker index, manifest and image config JSON from the content store, and
 * event payloads. Everything is hostile input: types are checked, sizes bounded, digests must be
 * sha256, ids must look like ids; what does not fit is rejected with a clear error rather than
 * trusted.
 */
import { createHash } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { Code, ShadowError } from "../../../common/errors.js";
import { parseConfigHistory, type HistoryStep } from "../engine-facts.js";
import type { RuntimeEvent } from "../runtime.js";
import { ContainerCreateSchema, ContainerDeleteSchema, ContainerUpdateSchema } from "../../../proto/gen/containerd/events/container_pb.js";
import {
  TaskCreateSchema,
  TaskDeleteSchema,
  TaskExitSchema,
  TaskOOMSchema,
  TaskPausedSchema,
  TaskResumedSchema,
  TaskStartSchema,
} from "../../../proto/gen/containerd/events/task_pb.js";

/** The only digests the agent accepts from containerd. */
export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
/** containerd identifiers (container ids, namespaces): alphanumerics, `.`, `_`, `-`, at most 76. */
export const ID_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,75})$/;
/** An overlayfs snapshot id (a bolt sequence number; anything else path-safe is tolerated). */
const SNAPSHOT_ID_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;

/** Index, manifest and config blobs are small: anything larger than this is refused unread. */
export const MAX_BLOB_BYTES = 4 * 1024 * 1024;
/** More layers than any real image has (OCI builders stop at 127). */
export const MAX_LAYERS = 512;
/** Entries kept of a label or annotation map, and the longest key or value kept whole. */
export const MAX_MAP_ENTRIES = 512;
export const MAX_MAP_VALUE = 4096;

export function isDigest(v: unknown): v is string {
  return typeof v === "string" && DIGEST_RE.test(v);
}

export function isSaneId(v: unknown): v is string {
  return typeof v === "string" && ID_RE.test(v);
}

/** A label/annotation map bounded in entries and lengths as it is read, so a hostile pod cannot fill the agent's memory (the link cuts it further, message-caps.ts). */
export function boundMap(m: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (m === undefined) return out;
  let n = 0;
  for (const [k, v] of Object.entries(m)) {
    if (n >= MAX_MAP_ENTRIES) break;
    if (typeof v !== "string" || k.length > MAX_MAP_VALUE) continue;
    out[k] = v.length > MAX_MAP_VALUE ? v.slice(0, MAX_MAP_VALUE) : v;
    n++;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Snapshot directories

/**
 * The snapshot id of an overlayfs snapshotter directory: `<root>/snapshots/<id>/fs` as the
 * snapshotter reports it, or `<id>/fs` as a compacted lowerdir shows in mountinfo (containerd
 * mounts long lowerdir lists relative to the snapshots directory). "" when the path is neither.
 */
export function snapshotIdOfDir(dir: string): string {
  const m = /(?:^|\/)snapshots\/([^/]+)\/fs\/?$/.exec(dir) ?? /^([^/]+)\/fs\/?$/.exec(dir);
  const id = m?.[1];
  return id !== undefined && SNAPSHOT_ID_RE.test(id) && id !== "." && id !== ".." ? id : "";
}

export interface SnapshotMount {
  type: string;
  source: string;
  options: readonly string[];
}

export interface SnapshotDirs {
  /** The container's writable layer directory (as the agent sees it). */
  upperDir: string;
  /** The image's layer directories, top first (as overlayfs lists them). */
  lowerDirs: string[];
}

/**
 * Where the agent finds a snapshot directory: `<snapshotsRoot>/snapshots/<id>/fs` rebuilt from
 * the id (so a hostile path can never point elsewhere); a path that is not a snapshot directory
 * is kept as given when `snapshotsRoot` is undefined (the agent sees the host's paths as they are).
 */
export function agentSnapshotDir(dir: string, snapshotsRoot: string | undefined): string {
  const id = snapshotIdOfDir(dir);
  if (id === "") {
    if (snapshotsRoot !== undefined || !dir.startsWith("/")) throw new ShadowError(Code.InvalidArgument, `containerd returned a layer directory "${dir.slice(0, 200)}" that is not an overlayfs snapshot directory`);
    return dir;
  }
  if (snapshotsRoot !== undefined) return `${snapshotsRoot.replace(/\/+$/, "")}/snapshots/${id}/fs`;
  if (!dir.startsWith("/")) throw new ShadowError(Code.InvalidArgument, `containerd returned a relative layer directory "${dir.slice(0, 200)}"`);
  return dir;
}

/**
 * The container's directories from Snapshots.Mounts of its active snapshot: an `overlay` mount
 * (`upperdir=`, `lowerdir=` top first, possibly relative `N/fs` entries), or a single `bind`
 * mount when the snapshot has no parent (an image without layers) or is a read-only view of one.
 */
export function parseSnapshotMounts(mounts: readonly SnapshotMount[], snapshotsRoot: string | undefined): SnapshotDirs {
  if (mounts.length !== 1) throw new ShadowError(Code.InvalidArgument, `containerd returned ${mounts.length} mounts for a container snapshot, expected 1`);
  const m = mounts[0] as SnapshotMount;
  if (m.options.length > MAX_LAYERS + 16) throw new ShadowError(Code.InvalidArgument, `containerd returned ${m.options.length} mount options`);
  if (m.type === "bind" || m.type === "rbind") {
    const ro = m.options.includes("ro");
    const dir = agentSnapshotDir(m.source, snapshotsRoot);
    // A read-only bind is a view of one committed layer; a writable one is an empty-image container.
    return ro ? { upperDir: "", lowerDirs: [dir] } : { upperDir: dir, lowerDirs: [] };
  }
  if (m.type !== "overlay") throw new ShadowError(Code.InvalidArgument, `containerd returned a "${m.type.slice(0, 40)}" mount for a container snapshot, expected overlay or bind`);
  let upper = "";
  let lower: string[] | undefined;
  for (const o of m.options) {
    if (o.startsWith("upperdir=")) upper = o.slice("upperdir=".length);
    else if (o.startsWith("lowerdir=")) lower = o.slice("lowerdir=".length).split(":");
  }
  if (lower === undefined || lower.some((d) => d === "")) throw new ShadowError(Code.InvalidArgument, "containerd returned an overlay mount without a lowerdir");
  if (lower.length > MAX_LAYERS) throw new ShadowError(Code.InvalidArgument, `containerd returned ${lower.length} lower directories (more than ${MAX_LAYERS})`);
  return {
    upperDir: upper === "" ? "" : agentSnapshotDir(upper, snapshotsRoot),
    lowerDirs: lower.map((d) => agentSnapshotDir(d, snapshotsRoot)),
  };
}

// ---------------------------------------------------------------------------------------------
// Index, manifest, config

export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
} as const;

export function isIndexMedia(t: string): boolean {
  return t === MEDIA.ociIndex || t === MEDIA.dockerList;
}

export function isManifestMedia(t: string): boolean {
  return t === MEDIA.ociManifest || t === MEDIA.dockerManifest;
}

export function isConfigMedia(t: string): boolean {
  return t === MEDIA.ociConfig || t === MEDIA.dockerConfig;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant: string };
}

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ShadowError(Code.InvalidArgument, `${what} is not a JSON object`);
  return v as Obj;
}

function optStr(o: Obj, k: string): string {
  const v = o[k];
  return typeof v === "string" ? v : "";
}

/** Checks a descriptor: sha256 digest, a size that is a non-negative integer within the cap. */
export function parseDescriptor(v: unknown, what: string, maxBytes = MAX_BLOB_BYTES): Descriptor {
  const o = obj(v, what);
  const digest = o["digest"];
  if (!isDigest(digest)) throw new ShadowError(Code.InvalidArgument, `${what} has a digest that is not sha256:<64 hex>`);
  const size = o["size"];
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw new ShadowError(Code.InvalidArgument, `${what} ${digest} has no valid size`);
  if (size > maxBytes) throw new ShadowError(Code.InvalidArgument, `${what} ${digest} is ${size} bytes, more than the ${maxBytes} read`);
  const d: Descriptor = { mediaType: optStr(o, "mediaType"), digest, size };
  if (typeof o["platform"] === "object" && o["platform"] !== null && !Array.isArray(o["platform"])) {
    const p = o["platform"] as Obj;
    d.platform = { os: optStr(p, "os"), architecture: optStr(p, "architecture"), variant: optStr(p, "variant") };
  }
  return d;
}

/** Node's arch as OCI names it. */
export function ociArch(arch: string = process.arch): string {
  const m: Record<string, string> = { x64: "amd64", ia32: "386", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64", loong64: "loong64", mips: "mips", mipsel: "mipsle" };
  return m[arch] ?? arch;
}

/** Parses JSON bytes, refusing more than the cap. */
export function parseJsonBlob(bytes: Uint8Array, what: string): unknown {
  if (bytes.length > MAX_BLOB_BYTES) throw new ShadowError(Code.InvalidArgument, `${what} is ${bytes.length} bytes, more than ${MAX_BLOB_BYTES}`);
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8")) as unknown;
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `${what} is not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** Checks that content is what its digest says (the content store is not trusted either). */
export function verifyDigest(bytes: Uint8Array, digest: string, what: string): void {
  const got = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  if (got !== digest) throw new ShadowError(Code.InvalidArgument, `${what} ${digest} does not match its content (sha256 ${got})`);
}

/**
 * The manifest to follow in an index (or Docker manifest list): the one for linux and the host's
 * architecture, else the first linux one, else the first.
 */
export function pickManifest(raw: unknown, arch: string = ociArch()): Descriptor {
  const o = obj(raw, "image index");
  const ms = o["manifests"];
  if (!Array.isArray(ms) || ms.length === 0) throw new ShadowError(Code.InvalidArgument, "image index lists no manifests");
  if (ms.length > 1024) throw new ShadowError(Code.InvalidArgument, `image index lists ${ms.length} manifests`);
  const ds = ms.map((m, i) => parseDescriptor(m, `image index manifests[${i}]`));
  const usable = ds.filter((d) => isManifestMedia(d.mediaType) || isIndexMedia(d.mediaType));
  if (usable.length === 0) throw new ShadowError(Code.InvalidArgument, "image index lists no image manifest (unknown media types)");
  const chosen = usable.find((d) => d.platform?.os === "linux" && d.platform.architecture === arch) ?? usable.find((d) => d.platform?.os === "linux") ?? usable[0];
  return chosen as Descriptor;
}

/** The config descriptor of an image manifest. */
export function manifestConfig(raw: unknown): Descriptor {
  const o = obj(raw, "image manifest");
  const mt = optStr(o, "mediaType");
  if (mt !== "" && !isManifestMedia(mt)) throw new ShadowError(Code.InvalidArgument, `image manifest has media type "${mt.slice(0, 80)}"`);
  const cfg = parseDescriptor(o["config"], "image manifest config");
  if (!isConfigMedia(cfg.mediaType)) throw new ShadowError(Code.InvalidArgument, `image manifest config has media type "${cfg.mediaType.slice(0, 80)}", not an image config`);
  return cfg;
}

export interface ImageConfigFacts {
  /** Bottom first. */
  diffIds: string[];
  history: HistoryStep[];
}

/** `rootfs.diff_ids` (sha256 each) and `history` of an image config. */
export function parseImageConfig(raw: unknown): ImageConfigFacts {
  const o = obj(raw, "image config");
  const rootfs = obj(o["rootfs"], "image config rootfs");
  if (rootfs["type"] !== "layers") throw new ShadowError(Code.InvalidArgument, `image config rootfs.type is ${JSON.stringify(rootfs["type"])?.slice(0, 40)}, not "layers"`);
  const ids = rootfs["diff_ids"];
  if (!Array.isArray(ids)) throw new ShadowError(Code.InvalidArgument, "image config rootfs.diff_ids is not a list");
  if (ids.length > MAX_LAYERS) throw new ShadowError(Code.InvalidArgument, `image config lists ${ids.length} layers (more than ${MAX_LAYERS})`);
  if (!ids.every(isDigest)) throw new ShadowError(Code.InvalidArgument, "image config rootfs.diff_ids holds a value that is not sha256:<64 hex>");
  let history: HistoryStep[] = [];
  try {
    history = parseConfigHistory(o);
  } catch {
    history = [];
  }
  return { diffIds: ids, history };
}

// ---------------------------------------------------------------------------------------------
// Events

/** The message name of an Any's type URL ("containerd.events.TaskStart", with or without a host/ prefix). */
export function anyTypeName(typeUrl: string): string {
  const i = typeUrl.lastIndexOf("/");
  return i >= 0 ? typeUrl.slice(i + 1) : typeUrl;
}

/**
 * The container an event is about, and whether it changed or is gone; undefined for events the
 * agent does not follow (exec processes, other topics, payloads that do not decode, odd ids).
 */
export function decodeEvent(topic: string, event: Pick<Any, "typeUrl" | "value"> | undefined): RuntimeEvent | undefined {
  if (event === undefined || topic.startsWith("/tasks/exec-")) return undefined;
  let id = "";
  let change: RuntimeEvent["change"] = "changed";
  try {
    switch (anyTypeName(event.typeUrl)) {
      case "containerd.events.ContainerCreate":
        id = fromBinary(ContainerCreateSchema, event.value).id;
        break;
      case "containerd.events.ContainerUpdate":
        id = fromBinary(ContainerUpdateSchema, event.value).id;
        break;
      case "containerd.events.ContainerDelete":
        id = fromBinary(ContainerDeleteSchema, event.value).id;
        change = "removed";
        break;
      case "containerd.events.TaskCreate":
        id = fromBinary(TaskCreateSchema, event.value).containerId;
        break;
      case "containerd.events.TaskStart":
        id = fromBinary(TaskStartSchema, event.value).containerId;
        break;
      case "containerd.events.TaskExit": {
        const e = fromBinary(TaskExitSchema, event.value);
        // An exec'd process exiting: the container itself did not change.
        if (e.id !== "" && e.id !== e.containerId) return undefined;
        id = e.containerId;
        break;
      }
      case "containerd.events.TaskDelete": {
        const e = fromBinary(TaskDeleteSchema, event.value);
        if (e.id !== "" && e.id !== e.containerId) return undefined;
        id = e.containerId;
        break;
      }
      case "containerd.events.TaskOOM":
        id = fromBinary(TaskOOMSchema, event.value).containerId;
        break;
      case "containerd.events.TaskPaused":
        id = fromBinary(TaskPausedSchema, event.value).containerId;
        break;
      case "containerd.events.TaskResumed":
        id = fromBinary(TaskResumedSchema, event.value).containerId;
        break;
      default:
        return undefined;
    }
  } catch {
    return undefined;
  }
  if (!isSaneId(id)) return undefined;
  return { id, change, action: topic.slice(0, 64) };
}

/** containerd filters for the event stream: container and task events of one namespace. */
export function eventFilters(namespace: string): string[] {
  const ns = JSON.stringify(namespace);
  return [`namespace==${ns},topic~="^/containers/"`, `namespace==${ns},topic~="^/tasks/"`];
}

/** What CRI mounts of its own into every container (hosts, resolv.conf, hostname, shm): not volumes. */
const CRI_SANDBOX_FILES = "/io.containerd.grpc.v1.cri/sandboxes/";
/** An OCI spec is a few kB; one past this is not read. */
const MAX_SPEC_BYTES = 1024 * 1024;

export interface SpecMount {
  source: string;
  destination: string;
  rw: boolean;
}

/**
 * The volume mounts of a container from its OCI runtime spec (containerd keeps it with the
 * container, as JSON in an Any): the bind mounts but CRI's own sandbox files. The same list CRI's
 * ContainerStatus gives, without a call per container. Undefined when the spec is not an OCI
 * spec or does not parse (the caller asks CRI instead).
 */
export function specMounts(spec: Pick<Any, "typeUrl" | "value"> | undefined, max: number): SpecMount[] | undefined {
  if (spec === undefined || !spec.typeUrl.includes("opencontainers/runtime-spec") || spec.value.length > MAX_SPEC_BYTES) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(spec.value).toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const mounts = (raw as Obj)["mounts"];
  if (mounts === undefined) return [];
  if (!Array.isArray(mounts)) return undefined;
  const out: SpecMount[] = [];
  for (const m of mounts) {
    if (typeof m !== "object" || m === null) return undefined;
    const o = m as Obj;
    const options = Array.isArray(o["options"]) ? o["options"].filter((x): x is string => typeof x === "string") : [];
    const bind = o["type"] === "bind" || options.includes("bind") || options.includes("rbind");
    const source = optStr(o, "source");
    const destination = optStr(o, "destination");
    if (!bind || source === "" || destination === "" || source.includes(CRI_SANDBOX_FILES)) continue;
    out.push({ source: source.slice(0, 4096), destination: destination.slice(0, 4096), rw: !options.includes("ro") });
    if (out.length >= max) break;
  }
  return out;
}
