/**
 * `shadowlayer train`: an anomaly model per image (or the node-level generic model) from baseline
 * windows, read from the aggregator (ListWindows over a time range) or from a file that
 * `shadowlayer windows --json` wrote. The layer-windows of the image's containers are selected
 * (of every container for the generic model), the model trained
 * (models/train.ts, progress on stderr), written as a versioned artifact file and, with
 * `--deploy`, sent through the aggregator to the agents that run the image (DeployModel).
 */
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { AdminService, QueryService, type ModelDeployment } from "../proto/gen/shadowlayer/v1/query_pb.js";
import { Code, ShadowError } from "../common/errors.js";
import { callUnary } from "../common/grpc.js";
import { initBackend } from "../models/backend.js";
import { serializeArtifact } from "../models/artifact.js";
import { inputsFromWindow } from "../models/input.js";
import { trainModel } from "../models/train.js";
import { FEATURE_VERSION } from "../models/features.js";
import { MIN_TRAINING_WINDOWS, type ModelInput, type ModelScope } from "../models/types.js";
import { connect } from "./client.js";
import { safeLine } from "./terminal-safe.js";
import type { ClientFlags } from "./options.js";
import { importWindow, type ImportedWindow } from "./window-export.js";
import { fetchWindows } from "./window-fetch.js";

/** What `train` was asked to do, checked (train-config.ts). */
export interface TrainPlan {
  /** Image references (container name, id, id prefix, or image id); empty with `generic`. */
  images: string[];
  generic: boolean;
  /** A file from `windows --json` (lines or an array), else the aggregator's windows of [since, until). */
  fromFile: string | undefined;
  since: Date;
  until: Date;
  out: string;
  deploy: boolean;
  node: string | undefined;
  epochs: number | undefined;
  seed: number | undefined;
}

/** One model's outcome, as `--json` prints it. */
export interface TrainResult {
  target: string;
  scope: "image" | "generic";
  image_id: string | null;
  ok: boolean;
  error?: string;
  version?: string;
  windows?: number;
  backend?: string;
  calibration_p995?: number;
  final_loss?: number;
  train_seconds?: number;
  file?: string;
  deployments?: Array<{ node: string; outcome: string; message: string }>;
}

/** A window file is read whole only as a JSON array; lines stream. */
const MAX_ARRAY_FILE_BYTES = 512 * 1024 * 1024;
const MAX_LINE_CHARS = 4 * 1024 * 1024;

const stderr = (line: string) => process.stderr.write(`${line}\n`);

/** Reads an exported windows file (JSON lines, or one JSON array); a bad line is refused with its number. */
export async function readWindowFile(file: string): Promise<ImportedWindow[]> {
  const st = await stat(file).catch((err: unknown) => {
    throw new ShadowError(Code.NotFound, `--from-file ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  });
  const head = Buffer.alloc(64);
  const fh = await open(file, "r");
  const { bytesRead } = await fh.read(head, 0, 64, 0).finally(() => fh.close());
  const at = (where: string, err: unknown) => new ShadowError(Code.InvalidArgument, `--from-file ${file}${where}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  if (head.subarray(0, bytesRead).toString("utf8").trimStart().startsWith("[")) {
    if (st.size > MAX_ARRAY_FILE_BYTES) throw at("", new Error(`a JSON array of ${st.size} bytes is more than ${MAX_ARRAY_FILE_BYTES} read at once; export JSON lines (windows --json without --array)`));
    let all: unknown;
    try {
      all = JSON.parse(await readFile(file, "utf8"));
    } catch (err) {
      throw at("", err);
    }
    if (!Array.isArray(all)) throw at("", new Error("not a JSON array"));
    return all.map((o, i) => {
      try {
        return importWindow(o);
      } catch (err) {
        throw at(`[${i}]`, err);
      }
    });
  }
  const out: ImportedWindow[] = [];
  let n = 0;
  for await (const line of createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Infinity })) {
    n++;
    if (line.trim() === "") continue;
    if (line.length > MAX_LINE_CHARS) throw at(`:${n}`, new Error(`a line of ${line.length} characters (at most ${MAX_LINE_CHARS})`));
    try {
      out.push(importWindow(JSON.parse(line)));
    } catch (err) {
      throw at(`:${n}`, err);
    }
  }
  return out;
}

/** Windows from the aggregator, with the image the graph of each container named. */
async function fetchAll(flags: ClientFlags, plan: TrainPlan): Promise<ImportedWindow[]> {
  const out: ImportedWindow[] = [];
  const progress = (n: number, last: Date | undefined) => stderr(`windows: ${n} read${last !== undefined ? ` (through ${last.toISOString()})` : ""}`);
  for await (const w of fetchWindows(flags, { since: plan.since, until: plan.until }, progress)) {
    out.push({ window: w.window, imageId: w.ctx?.imageId || undefined, kinds: w.ctx?.kinds ?? new Map() });
  }
  return out;
}

/** An image: its id, and containers of it the aggregator named (for windows that do not carry the image). */
interface ImageTarget {
  imageId: string;
  containers: Set<string>;
}

/**
 * The image a reference names: an image id, or a container (name, id, id prefix) that the windows
 * name with its image, else that the aggregator has a graph of.
 */
async function resolveImage(ref: string, windows: readonly ImportedWindow[], flags: ClientFlags, fromFile: boolean): Promise<ImageTarget> {
  const byContainer = (w: ImportedWindow) => w.window.containerName === ref || w.window.containerId === ref || (/^[0-9a-f]{4,63}$/.test(ref) && w.window.containerId.startsWith(ref));
  let imageId = /^sha256:[0-9a-f]{64}$/.test(ref) ? ref : windows.find((w) => w.imageId !== undefined && byContainer(w))?.imageId;
  const containers = new Set<string>();
  if (imageId === undefined) {
    try {
      const c = await connect(flags, QueryService);
      try {
        const g = await callUnary(c.client, QueryService.method.getLayerGraph, { container: ref }).catch((err: unknown) => {
          const code = (err as Partial<grpc.ServiceError>).code;
          return code === grpc.status.NOT_FOUND || code === grpc.status.INVALID_ARGUMENT ? undefined : c.explain(err);
        });
        if (g !== undefined && g.imageId !== "") {
          imageId = g.imageId;
          containers.add(g.containerId);
        }
      } finally {
        c.client.close();
      }
    } catch (err) {
      // Training from a file needs no aggregator: the reference is then unknown, said below.
      if (!fromFile) throw err;
    }
  }
  if (imageId === undefined) {
    throw new ShadowError(Code.NotFound, `unknown image ${JSON.stringify(ref)}: no window names a container of that name or id${fromFile ? "" : " and the aggregator knows none"} (give a container name, id or id prefix, or an image id sha256:…)`);
  }
  return { imageId, containers };
}

/**
 * The model inputs: every layer-window of the image's containers (the agent scores all of a
 * container's layers, its writable layer and volumes too, with its image's model), or of every
 * container for the generic model.
 */
function selectInputs(windows: readonly ImportedWindow[], image: ImageTarget | undefined): { inputs: ModelInput[]; otherVersion: number } {
  const inputs: ModelInput[] = [];
  let otherVersion = 0;
  for (const w of windows) {
    if (image !== undefined && w.imageId !== image.imageId && !image.containers.has(w.window.containerId)) continue;
    const got = inputsFromWindow(w.window);
    if (got.length === 0 && w.window.layers.length > 0 && w.window.featureVersion !== FEATURE_VERSION) otherVersion += w.window.layers.length;
    for (const g of got) inputs.push(g.input);
  }
  return { inputs, otherVersion };
}

/** A file name from a version: only what every filesystem takes. */
const fileSafe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, "-");

/** Trains one model and writes (and deploys) it. */
async function trainOne(flags: ClientFlags, plan: TrainPlan, target: string, windows: readonly ImportedWindow[], source: string): Promise<TrainResult> {
  const image = target === "generic" ? undefined : await resolveImage(target, windows, flags, plan.fromFile !== undefined);
  const scope: ModelScope = image === undefined ? { kind: "generic" } : { kind: "image", imageId: image.imageId };
  const what = image === undefined ? "the generic model" : `image ${image.imageId}`;
  const { inputs, otherVersion } = selectInputs(windows, image);
  if (inputs.length < MIN_TRAINING_WINDOWS) {
    const other = otherVersion > 0 ? `; ${otherVersion} more are of an older feature version, which no model takes` : "";
    throw new ShadowError(Code.FailedPrecondition, `too few windows for ${what}: ${inputs.length} layer-windows of feature version ${FEATURE_VERSION} in ${source} (${MIN_TRAINING_WINDOWS} needed${other}); widen --since or let the agents record longer`);
  }
  const backend = await initBackend("auto");
  stderr(`training ${what} on ${inputs.length} layer-windows (backend ${backend.name}: ${backend.reason})`);
  const t0 = performance.now();
  const model = await trainModel(inputs, {
    scope,
    ...(plan.epochs !== undefined ? { epochs: plan.epochs } : {}),
    ...(plan.seed !== undefined ? { seed: plan.seed } : {}),
    onProgress: (p) => stderr(`  epoch ${p.epoch}/${p.epochs}  loss ${p.loss.toPrecision(4)}`),
  });
  try {
    const seconds = (performance.now() - t0) / 1000;
    const m = model.manifest;
    const text = serializeArtifact(model.toArtifact());
    await mkdir(plan.out, { recursive: true });
    const file = join(plan.out, `${image === undefined ? "generic" : `image-${image.imageId.slice(7, 19)}`}-${fileSafe(m.version)}.json`);
    // Written whole or not at all: an agent watching the directory never reads half a model.
    const tmp = `${file}.partial`;
    const fh = await open(tmp, "w", 0o644);
    try {
      await fh.writeFile(text);
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    const result: TrainResult = {
      target,
      scope: scope.kind,
      image_id: image?.imageId ?? null,
      ok: true,
      version: m.version,
      windows: m.trainingWindows,
      backend: m.backend,
      calibration_p995: m.calibration.p995,
      final_loss: m.finalLoss,
      train_seconds: Math.round(seconds * 100) / 100,
      file,
    };
    if (plan.deploy) result.deployments = (await deploy(flags, text, plan.node)).map((d) => ({ node: d.node, outcome: d.outcome, message: d.message }));
    return result;
  } finally {
    model.dispose();
  }
}

/** Sends an artifact through the aggregator (AdminService.DeployModel, the admin certificate). */
async function deploy(flags: ClientFlags, artifact: string, node: string | undefined): Promise<ModelDeployment[]> {
  const c = await connect(flags, AdminService);
  try {
    const r = await callUnary(c.client, AdminService.method.deployModel, { artifact: new TextEncoder().encode(artifact), node: node ?? "" }, { deadlineMs: 120_000 }).catch(c.explain);
    return r.deployments;
  } finally {
    c.client.close();
  }
}

/** Runs the plan: every target is tried; the results say which failed and why. */
export async function runTrain(flags: ClientFlags, plan: TrainPlan): Promise<TrainResult[]> {
  const windows = plan.fromFile !== undefined ? await readWindowFile(plan.fromFile) : await fetchAll(flags, plan);
  const source = plan.fromFile !== undefined ? plan.fromFile : `the aggregator's windows from ${plan.since.toISOString()} to ${plan.until.toISOString()}`;
  stderr(`${windows.length} windows read from ${source}`);
  const targets = [...plan.images, ...(plan.generic ? ["generic"] : [])];
  const results: TrainResult[] = [];
  for (const target of targets) {
    try {
      results.push(await trainOne(flags, plan, target, windows, source));
    } catch (err) {
      // An aggregator that is not there ends the run; one image's problem does not end the others.
      if (err instanceof ShadowError && err.code === Code.AggregatorUnavailable) throw err;
      results.push({ target, scope: target === "generic" ? "generic" : "image", image_id: null, ok: false, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return results;
}

/** The results for people: per model its version, windows, backend, calibration, time, file and deployments. */
export function renderTrainResults(results: readonly TrainResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    const what = r.scope === "generic" ? "generic model" : `image ${r.image_id ?? r.target}${r.image_id !== null && r.image_id !== r.target ? ` (${r.target})` : ""}`;
    if (!r.ok) {
      lines.push(safeLine`${what}: not trained: ${r.error ?? "?"}`);
      continue;
    }
    lines.push(safeLine`${what}: model ${r.version ?? "?"}`);
    lines.push(safeLine`  ${r.windows ?? 0} windows, backend ${r.backend ?? "?"}, calibration p99.5 ${(r.calibration_p995 ?? 0).toPrecision(4)}, final loss ${(r.final_loss ?? 0).toPrecision(4)}, trained in ${(r.train_seconds ?? 0).toFixed(1)} s`);
    lines.push(safeLine`  written to ${r.file ?? "?"}`);
    if (r.deployments !== undefined) {
      if (r.deployments.length === 0) lines.push("  deployed to no node");
      for (const d of r.deployments) lines.push(safeLine`  ${d.node}: ${d.outcome}${d.message !== "" ? ` (${d.message})` : ""}`);
    }
  }
  return lines.join("\n");
}
