/**
 * The source image built again from its declared recipe (labels `shadowlayer.recipe.context`, a
 * directory on the builder's host, and `shadowlayer.recipe.dockerfile` in it) through the Engine
 * build API: no cache, under the builder's cgroup limits. The label values come from the image:
 * they are checked (an absolute directory that is not a symlink, a Dockerfile path inside it) and
 * passed as API fields, never to a shell.
 */
import { lstat, readdir } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { Code, ShadowError } from "../../common/errors.js";
import { followEngine } from "./engine-progress.js";
import { SOURCE_LABELS, type Builder, type ImageFacts } from "./types.js";

export interface Recipe {
  context: string;
  dockerfile: string;
}

/** The recipe the image declares, or undefined; throws when the labels are there but unusable. */
export function recipeOf(facts: ImageFacts): Recipe | undefined {
  const context = facts.labels[SOURCE_LABELS.recipeContext];
  if (context === undefined || context === "") return undefined;
  const dockerfile = facts.labels[SOURCE_LABELS.recipeDockerfile] ?? "Dockerfile";
  if (!isAbsolute(context) || context.includes("\0")) throw new ShadowError(Code.InvalidArgument, `${SOURCE_LABELS.recipeContext} of ${facts.name} is not an absolute path`);
  if (dockerfile === "" || isAbsolute(dockerfile) || dockerfile.split("/").includes("..") || dockerfile.includes("\0")) {
    throw new ShadowError(Code.InvalidArgument, `${SOURCE_LABELS.recipeDockerfile} of ${facts.name} is not a path inside its context`);
  }
  return { context, dockerfile };
}

/** Builds the recipe on the builder with no cache; returns the new image's id. */
export async function buildRecipe(builder: Builder, recipe: Recipe, signal: AbortSignal, log: (line: string) => void): Promise<string> {
  const st = await lstat(recipe.context).catch(() => undefined);
  if (st === undefined || !st.isDirectory()) throw new ShadowError(Code.FailedPrecondition, `recipe context ${recipe.context} is not a directory on this host`);
  const src = await readdir(recipe.context);
  const l = builder.limits;
  // dockerode's types say cpusetcpus is a number; the API takes the cpuset string ("0-1").
  const options: Record<string, unknown> = {
      dockerfile: recipe.dockerfile,
      nocache: true,
      rm: true,
      forcerm: true,
      networkmode: "host",
      ...(l.cpusetCpus !== undefined ? { cpusetcpus: l.cpusetCpus } : {}),
      ...(l.cpuPeriod !== undefined ? { cpuperiod: l.cpuPeriod } : {}),
      ...(l.cpuQuota !== undefined ? { cpuquota: l.cpuQuota } : {}),
      ...(l.cpuShares !== undefined ? { cpushares: l.cpuShares } : {}),
      ...(l.memoryBytes !== undefined ? { memory: l.memoryBytes } : {}),
      abortSignal: signal,
  };
  const stream: NodeJS.ReadableStream = await builder.docker.buildImage({ context: recipe.context, src }, options as object);
  const out = await followEngine(builder.docker, stream, "recipe build", Code.BuildFailed, (e) => {
    if (typeof e.stream === "string" && e.stream.trim() !== "") log(e.stream.trim());
  });
  const id = out.map((o) => o.aux?.ID).find((x): x is string => typeof x === "string");
  if (id === undefined) throw new ShadowError(Code.BuildFailed, "recipe build gave no image id");
  return id;
}
