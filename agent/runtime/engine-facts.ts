/**
 * The few facts the agent needs from the Engine API, parsed from its JSON into typed values at
 * the edge. Anything that does not fit is rejected with a clear error rather than trusted.
 */
import { Code, ShadowError } from "../../common/errors.js";

export interface MountFact {
  type: string;
  /** Volume name, or "" for binds and tmpfs. */
  name: string;
  source: string;
  destination: string;
  rw: boolean;
}

export interface ContainerFacts {
  id: string;
  name: string;
  image: string;
  imageId: string;
  state: string;
  pid: number;
  labels: Record<string, string>;
  driver: string;
  /** Storage directories from GraphDriver.Data. */
  upperDir: string;
  lowerDirs: string[];
  mounts: MountFact[];
  /** The pod this container belongs to (from CRI); absent outside Kubernetes. */
  pod?: PodFacts;
  /**
   * Set when the layer directories cannot be read or checked on this storage (containerd with a
   * snapshotter other than overlayfs): the graph lists the image's layers, says why in its mount
   * check (unavailable) and attributes no process rather than guess.
   */
  storageUnavailable?: string;
  /**
   * A disagreement the runtime found in its own storage chain (containerd: the snapshot parents
   * are not the image's chain ids); the mount check reports it as a mismatch.
   */
  storageProblem?: string;
}

/** A Kubernetes pod as CRI describes it (values the pod's author controls: capped before they leave). */
export interface PodFacts {
  name: string;
  namespace: string;
  uid: string;
  /** The pod sandbox's id in the runtime. */
  sandboxId: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface ImageFacts {
  id: string;
  tags: string[];
  diffIds: string[];
  driver: string;
  /** Layer directories, top first (UpperDir then LowerDir entries). */
  layerDirs: string[];
  created: string;
}

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ShadowError(Code.InvalidArgument, `engine returned ${what} that is not an object`);
  }
  return v as Obj;
}

function str(o: Obj, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== "string") throw new ShadowError(Code.InvalidArgument, `engine returned ${what}.${key} that is not a string`);
  return v;
}

function optStr(o: Obj | undefined, key: string): string {
  const v = o?.[key];
  return typeof v === "string" ? v : "";
}

function strMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof v !== "object" || v === null) return out;
  for (const [k, val] of Object.entries(v)) if (typeof val === "string") out[k] = val;
  return out;
}

function splitDirs(v: string): string[] {
  return v === "" ? [] : v.split(":");
}

/** Parses a `GET /containers/{id}/json` body. */
export function parseContainerInspect(raw: unknown): ContainerFacts {
  const o = obj(raw, "container inspect");
  const state = o["State"] === undefined ? undefined : obj(o["State"], "State");
  const config = o["Config"] === undefined ? undefined : obj(o["Config"], "Config");
  const gd = o["GraphDriver"] === undefined ? undefined : obj(o["GraphDriver"], "GraphDriver");
  const data = gd?.["Data"] === undefined || gd["Data"] === null ? undefined : obj(gd["Data"], "GraphDriver.Data");
  const mounts: MountFact[] = [];
  if (Array.isArray(o["Mounts"])) {
    for (const m of o["Mounts"]) {
      const mo = obj(m, "Mounts[]");
      mounts.push({
        type: optStr(mo, "Type"),
        name: optStr(mo, "Name"),
        source: optStr(mo, "Source"),
        destination: optStr(mo, "Destination"),
        rw: mo["RW"] !== false,
      });
    }
  }
  const pid = state?.["Pid"];
  return {
    id: str(o, "Id", "container"),
    name: optStr(o, "Name").replace(/^\//, ""),
    image: optStr(config, "Image"),
    imageId: str(o, "Image", "container"),
    state: optStr(state, "Status"),
    pid: typeof pid === "number" && Number.isInteger(pid) ? pid : 0,
    labels: strMap(config?.["Labels"]),
    driver: optStr(gd, "Name"),
    upperDir: optStr(data, "UpperDir"),
    lowerDirs: splitDirs(optStr(data, "LowerDir")),
    mounts,
  };
}

/** Parses a `GET /images/{id}/json` body. */
export function parseImageInspect(raw: unknown): ImageFacts {
  const o = obj(raw, "image inspect");
  const rootfs = obj(o["RootFS"], "RootFS");
  const layers = rootfs["Layers"];
  if (!Array.isArray(layers) || !layers.every((l): l is string => typeof l === "string" && /^sha256:[0-9a-f]{64}$/.test(l))) {
    throw new ShadowError(Code.InvalidArgument, "engine returned RootFS.Layers that are not sha256 digests");
  }
  const gd = o["GraphDriver"] === undefined ? undefined : obj(o["GraphDriver"], "GraphDriver");
  const data = gd?.["Data"] === undefined || gd["Data"] === null ? undefined : obj(gd["Data"], "GraphDriver.Data");
  const upper = optStr(data, "UpperDir");
  return {
    id: str(o, "Id", "image"),
    tags: Array.isArray(o["RepoTags"]) ? o["RepoTags"].filter((t): t is string => typeof t === "string") : [],
    diffIds: layers,
    driver: optStr(gd, "Name"),
    layerDirs: [...(upper === "" ? [] : [upper]), ...splitDirs(optStr(data, "LowerDir"))],
    created: optStr(o, "Created"),
  };
}

export interface HistoryStep {
  createdBy: string;
  created: string;
  comment: string;
  emptyLayer: boolean;
}

/**
 * Pairs the non-empty history steps with the layers, oldest first; no names at all rather than
 * wrong ones when the counts differ (Docker's and containerd's images alike).
 */
export function stepsForLayers(history: readonly HistoryStep[], count: number): Array<HistoryStep | undefined> {
  const real = history.filter((h) => !h.emptyLayer);
  if (real.length !== count) return new Array<undefined>(count).fill(undefined);
  return real;
}

/** Parses the `history` of an image config (imagedb content), oldest first. */
export function parseConfigHistory(raw: unknown): HistoryStep[] {
  const o = obj(raw, "image config");
  const h = o["history"];
  if (!Array.isArray(h)) return [];
  return h.map((step) => {
    const s = obj(step, "history[]");
    return {
      createdBy: optStr(s, "created_by"),
      created: optStr(s, "created"),
      comment: optStr(s, "comment"),
      emptyLayer: s["empty_layer"] === true,
    };
  });
}
