/**
 * The facts a strategy is chosen from, read from the builder's engine (image inspect and
 * history) and parsed into typed values at the edge. Labels and history are whatever the image's
 * author wrote: kept as data (never put into a shell or a format string), and bounded so that a
 * hostile image cannot make the job's record unbounded.
 */
import type Docker from "dockerode";
import { Code, ShadowError } from "../../common/errors.js";
import { isEngineNotFound } from "../../common/engine.js";
import type { ImageFacts } from "./types.js";

/** Past these, an image is not one a person wrote: the rest is dropped. */
export const FACT_BOUNDS = { labels: 512, labelBytes: 64 * 1024, history: 1024, createdBy: 4096, layers: 1024 } as const;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);

function boundedLabels(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isObj(v)) return out;
  let n = 0;
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== "string") continue;
    if (++n > FACT_BOUNDS.labels) break;
    if (k.length + val.length > FACT_BOUNDS.labelBytes) continue;
    out[k] = val;
  }
  return out;
}

/** Image inspect and history of `ref` on `docker`. */
export async function imageFacts(docker: Docker, ref: string): Promise<ImageFacts> {
  let raw: unknown;
  let hist: unknown;
  try {
    raw = await docker.getImage(ref).inspect();
    hist = await docker.getImage(ref).history();
  } catch (err) {
    if (isEngineNotFound(err)) throw new ShadowError(Code.NotFound, `image ${ref} is not on the builder`, { cause: err });
    throw new ShadowError(Code.BuilderUnavailable, `cannot inspect image ${ref}: ${ShadowError.from(err).message}`, { cause: err });
  }
  if (!isObj(raw) || typeof raw["Id"] !== "string") throw new ShadowError(Code.InvalidArgument, `engine returned an image inspect of ${ref} without an Id`);
  const config = isObj(raw["Config"]) ? raw["Config"] : {};
  const rootfs = isObj(raw["RootFS"]) ? raw["RootFS"] : {};
  const diffIds = strings(rootfs["Layers"]);
  if (diffIds.length > FACT_BOUNDS.layers) throw new ShadowError(Code.InvalidArgument, `image ${ref} has ${diffIds.length} layers`);
  const tags = strings(raw["RepoTags"]).filter((t) => t !== "<none>:<none>");
  // The history API lists the top step first and has no empty-layer flag: a step of size 0 is taken as one.
  const history = (Array.isArray(hist) ? hist : [])
    .slice(0, FACT_BOUNDS.history)
    .filter(isObj)
    .reverse()
    .map((h) => ({ createdBy: typeof h["CreatedBy"] === "string" ? h["CreatedBy"].slice(0, FACT_BOUNDS.createdBy) : "", emptyLayer: h["Size"] === 0 }));
  return {
    imageId: raw["Id"],
    name: tags[0] ?? raw["Id"],
    labels: boundedLabels(config["Labels"]),
    diffIds,
    history,
    repoDigests: strings(raw["RepoDigests"]),
    os: typeof raw["Os"] === "string" ? raw["Os"] : "",
    architecture: typeof raw["Architecture"] === "string" ? raw["Architecture"] : "",
  };
}
