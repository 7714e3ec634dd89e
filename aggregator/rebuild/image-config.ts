/**
 * An image config (the JSON whose digest is the image id), parsed at the edge into the few
 * fields the strategies change, and written back with everything else kept as the source had it.
 * Labels and history come from whoever built the image: they are carried as data, never
 * interpreted.
 */
import { Code, ShadowError } from "../../common/errors.js";

/** A config is a few KiB; anything near this is not one. */
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  comment?: string;
  author?: string;
  empty_layer?: boolean;
}

export interface ParsedConfig {
  /** The whole JSON object (kept for the fields no strategy touches). */
  raw: Record<string, unknown>;
  diffIds: string[];
  history: HistoryEntry[];
  labels: Record<string, string>;
  os: string;
  architecture: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses an image config; rejects one without a valid rootfs. */
export function parseImageConfig(buf: Buffer, what = "image config"): ParsedConfig {
  if (buf.length > MAX_CONFIG_BYTES) throw new ShadowError(Code.InvalidArgument, `${what} is ${buf.length} bytes (limit ${MAX_CONFIG_BYTES})`);
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString("utf8"));
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `${what} is not JSON`, { cause: err });
  }
  if (!isObject(raw)) throw new ShadowError(Code.InvalidArgument, `${what} is not a JSON object`);
  const rootfs = raw["rootfs"];
  const ids = isObject(rootfs) ? rootfs["diff_ids"] : undefined;
  if (!Array.isArray(ids) || !ids.every((d): d is string => typeof d === "string" && DIGEST.test(d))) {
    throw new ShadowError(Code.InvalidArgument, `${what} has no valid rootfs.diff_ids`);
  }
  const history = Array.isArray(raw["history"]) ? raw["history"].filter(isObject).map(historyEntry) : [];
  const cfg = isObject(raw["config"]) ? raw["config"] : undefined;
  const labels: Record<string, string> = {};
  if (cfg !== undefined && isObject(cfg["Labels"])) for (const [k, v] of Object.entries(cfg["Labels"])) if (typeof v === "string") labels[k] = v;
  return {
    raw,
    diffIds: ids,
    history,
    labels,
    os: typeof raw["os"] === "string" ? raw["os"] : "",
    architecture: typeof raw["architecture"] === "string" ? raw["architecture"] : "",
  };
}

function historyEntry(o: Record<string, unknown>): HistoryEntry {
  const h: HistoryEntry = {};
  if (typeof o["created"] === "string") h.created = o["created"];
  if (typeof o["created_by"] === "string") h.created_by = o["created_by"];
  if (typeof o["comment"] === "string") h.comment = o["comment"];
  if (typeof o["author"] === "string") h.author = o["author"];
  if (o["empty_layer"] === true) h.empty_layer = true;
  return h;
}

/** How many history entries made a layer (the rest are ENV, LABEL, … steps). */
export function layerSteps(history: readonly HistoryEntry[]): number {
  return history.filter((h) => h.empty_layer !== true).length;
}

export interface ConfigChanges {
  diffIds: string[];
  history?: HistoryEntry[];
  /** Labels to set; a value of `null` removes the label. */
  labels?: Record<string, string | null>;
  /** RFC 3339; defaults to now. */
  created?: string;
}

/** The config with a new rootfs, history, labels and creation time; every other field as it was. */
export function composeConfig(base: ParsedConfig, changes: ConfigChanges): Buffer {
  const raw: Record<string, unknown> = structuredClone(base.raw);
  raw["rootfs"] = { type: "layers", diff_ids: changes.diffIds };
  raw["created"] = changes.created ?? new Date().toISOString();
  if (changes.history !== undefined) raw["history"] = changes.history;
  if (changes.labels !== undefined) {
    const cfg: Record<string, unknown> = isObject(raw["config"]) ? raw["config"] : {};
    const labels: Record<string, unknown> = isObject(cfg["Labels"]) ? cfg["Labels"] : {};
    for (const [k, v] of Object.entries(changes.labels)) {
      if (v === null) delete labels[k];
      else labels[k] = v;
    }
    cfg["Labels"] = labels;
    raw["config"] = cfg;
  }
  return Buffer.from(JSON.stringify(raw));
}
