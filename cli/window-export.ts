/**
 * The window export format (`shadowlayer windows --json`, read back by `shadowlayer train
 * --from-file`): one JSON object per window, the feature vector of each layer by name (in the
 * order and with the names of the window's `feature_version`; an unavailable value is null), the
 * container's image id when the aggregator knew it, each layer's kind and anomaly verdict.
 * Reading a file back checks every line: a file is input from anywhere.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LayerKind, type LayerGraph } from "../proto/gen/shadowlayer/v1/graph_pb.js";
import { WindowSummarySchema, type Anomaly, type WindowSummary } from "../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { decodeFeatures, encodeFeatures, FEATURE_NAMES } from "../models/features.js";
import { Code, ShadowError } from "../common/errors.js";
import { renderTable } from "./table.js";
import { anomalyCell, anomalyJson, windowJson } from "./telemetry-format.js";

/** Names of a vector of `n` values: each version adds at the end, so a shorter one is a prefix. */
export function featureNamesFor(n: number): string[] {
  return Array.from({ length: n }, (_, i) => FEATURE_NAMES[i] ?? `feature_${i}`);
}

/** What the export knows of a container beyond its windows (from its graph). */
export interface ContainerContext {
  imageId: string;
  image: string;
  kinds: Map<string, string>;
}

export function containerContext(g: LayerGraph): ContainerContext {
  const kindName = (k: LayerKind) => (k === LayerKind.IMAGE ? "image" : k === LayerKind.WRITABLE ? "writable" : k === LayerKind.VOLUME ? "volume" : "unknown");
  return { imageId: g.imageId, image: g.image, kinds: new Map(g.layers.map((l) => [l.layerId, kindName(l.kind)])) };
}

/** One exported window (`ctx` undefined: the container's graph is gone, its image unknown). */
export function exportWindow(w: WindowSummary, ctx: ContainerContext | undefined): Record<string, unknown> {
  const base = windowJson(w);
  const seconds = w.start !== undefined && w.end !== undefined ? (timestampDate(w.end).getTime() - timestampDate(w.start).getTime()) / 1000 : null;
  return {
    ...base,
    image_id: ctx?.imageId || null,
    image: ctx?.image || null,
    seconds,
    layers: w.layers.map((l) => {
      let vector: number[] = [];
      try {
        vector = decodeFeatures(l.featuresF64le);
      } catch {
        // A buffer that is no float64 array has no features to export.
      }
      const names = featureNamesFor(vector.length);
      const features: Record<string, number | null> = {};
      names.forEach((n, i) => {
        const v = vector[i];
        features[n] = v !== undefined && Number.isFinite(v) ? v : null;
      });
      return { layer_id: l.layerId, layer_name: l.layerName, kind: ctx?.kinds.get(l.layerId) ?? null, library_layers: l.libraryLayers, features, anomaly: anomalyJson(l.anomaly) };
    }),
  };
}

/** A window read back from an export, with the context the export carried. */
export interface ImportedWindow {
  window: WindowSummary;
  imageId: string | undefined;
  /** Layer id -> kind ("image", "writable", "volume"), where the export knew it. */
  kinds: Map<string, string>;
}

const MAX_LAYERS = 1024;
const MAX_ID = 512;

/** Reads one exported window; throws a ShadowError naming what is wrong (the caller adds the line). */
export function importWindow(o: unknown): ImportedWindow {
  const bad = (why: string): never => {
    throw new ShadowError(Code.InvalidArgument, why);
  };
  if (typeof o !== "object" || o === null || Array.isArray(o)) return bad("not a JSON object");
  const r = o as Record<string, unknown>;
  const str = (v: unknown, name: string): string => (typeof v === "string" && v.length <= MAX_ID ? v : v === undefined || v === null ? "" : bad(`${name} is not a string`));
  const time = (v: unknown, name: string) => {
    const t = typeof v === "string" ? Date.parse(v) : Number.NaN;
    return Number.isFinite(t) ? timestampFromDate(new Date(t)) : bad(`${name} is not an ISO time`);
  };
  if (!Array.isArray(r.layers)) return bad("layers is not an array");
  if (r.layers.length > MAX_LAYERS) return bad(`${r.layers.length} layers (at most ${MAX_LAYERS})`);
  const kinds = new Map<string, string>();
  const layers = r.layers.map((l: unknown, i: number) => {
    if (typeof l !== "object" || l === null) return bad(`layers[${i}] is not an object`);
    const lr = l as Record<string, unknown>;
    const layerId = str(lr.layer_id, `layers[${i}].layer_id`);
    if (typeof lr.kind === "string") kinds.set(layerId, lr.kind);
    const f = lr.features;
    if (typeof f !== "object" || f === null || Array.isArray(f)) return bad(`layers[${i}].features is not an object`);
    const values = f as Record<string, unknown>;
    const n = Object.keys(values).length;
    if (n > FEATURE_NAMES.length + 64) return bad(`layers[${i}].features has ${n} entries`);
    const vector = featureNamesFor(n).map((name) => {
      const v = values[name];
      if (v === null || v === undefined) return Number.NaN;
      return typeof v === "number" && Number.isFinite(v) ? v : bad(`layers[${i}].features.${name} is not a number`);
    });
    return { layerId, layerName: str(lr.layer_name, `layers[${i}].layer_name`), featuresF64le: encodeFeatures(vector) };
  });
  const window = create(WindowSummarySchema, {
    node: str(r.node, "node"),
    containerId: str(r.container_id, "container_id"),
    containerName: str(r.container_name, "container_name"),
    featureVersion: str(r.feature_version, "feature_version"),
    start: time(r.start, "start"),
    end: time(r.end, "end"),
    layers,
  });
  const imageId = str(r.image_id, "image_id");
  return { window, imageId: imageId === "" ? undefined : imageId, kinds };
}

/** The highest anomaly verdict among a window's layers (for tables). */
export function topAnomaly(w: WindowSummary): Anomaly | undefined {
  let best: Anomaly | undefined;
  for (const l of w.layers) if (l.anomaly !== undefined && (best === undefined || l.anomaly.score > best.score)) best = l.anomaly;
  return best;
}

/** The `windows` table: one row per window, oldest first. */
export function renderWindows(rows: ReadonlyArray<{ window: WindowSummary; ctx: ContainerContext | undefined }>): string {
  return renderTable(
    ["END", "CONTAINER", "NODE", "IMAGE", "SECONDS", "LAYERS", "FEATURES", "ANOMALY"],
    rows.map(({ window: w, ctx }) => [
      w.end ? timestampDate(w.end).toISOString().slice(0, 19) : "-",
      w.containerName || w.containerId.slice(0, 12),
      w.node,
      ctx?.image || (ctx?.imageId ?? "").slice(7, 19) || "-",
      w.start && w.end ? ((timestampDate(w.end).getTime() - timestampDate(w.start).getTime()) / 1000).toFixed(1) : "-",
      String(w.layers.length),
      w.featureVersion || "-",
      anomalyCell(topAnomaly(w)),
    ]),
  );
}
