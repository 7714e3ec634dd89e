/**
 * `recipe`: rebuilds the image from the build context its labels declare
 * (`shadowlayer.recipe.context`, `shadowlayer.recipe.dockerfile`), through the Engine build API
 * on the leased builder, under the builder's cgroup limits.
 *
 * No build cache at all (nocache): the risky layer may be any step, and a cache hit from it up
 * would bring it back; a fresh build is the simple way to be sure. Bases named with a registry
 * host (`registry.example/base:2`, `127.0.0.1:5000/base`) are pulled fresh first; a bare name is
 * used as the builder has it (it may be local-only, and a pull would then fail the build). The
 * context is sent as the docker CLI would send it (its .dockerignore applied).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type Docker from "dockerode";
import { Code, ShadowError } from "../../../common/errors.js";
import { isEngineNotFound } from "../../../common/engine.js";
import { DEFAULT_CONTEXT_BOUNDS, listContext, packContext, resolveRecipe, type ContextBounds } from "../recipe-context.js";
import type { BuildLimits, ImageFacts, Strategy, StrategyContext, StrategyResult } from "../types.js";
import { SOURCE_LABELS } from "../types.js";

export interface RecipeOptions {
  /** `--recipe-root DIR` (repeatable): the only places a recipe label may point into. */
  roots: readonly string[];
  bounds?: ContextBounds;
}

/** Whether the recipe strategy can rebuild an image, and why (or why not: shown as the strategy reason). */
export type RecipeVerdict = { applies: true; reason: string } | { applies: false; reason: string };

export interface RecipeStrategy extends Strategy {
  explain(facts: ImageFacts): RecipeVerdict;
}

const MAX_DOCKERFILE = 1024 * 1024;

export function recipeStrategy(opts: RecipeOptions): RecipeStrategy {
  const bounds = opts.bounds ?? DEFAULT_CONTEXT_BOUNDS;
  const explain = (facts: ImageFacts): RecipeVerdict => {
    if (facts.labels[SOURCE_LABELS.recipeContext] === undefined) return { applies: false, reason: `no ${SOURCE_LABELS.recipeContext} label` };
    try {
      const r = resolveRecipe(facts.labels, opts.roots);
      return { applies: true, reason: `recipe ${r.contextDir} (${r.dockerfile}) under recipe root ${r.root}` };
    } catch (err) {
      return { applies: false, reason: err instanceof Error ? err.message : String(err) };
    }
  };
  return {
    name: "recipe",
    explain,
    applies: (facts) => {
      const v = explain(facts);
      return v.applies ? v.reason : undefined;
    },
    refusal: (facts) => {
      const v = explain(facts);
      return v.applies ? undefined : v.reason;
    },
    run: (ctx) => runRecipe(ctx, opts.roots, bounds),
  };
}

async function runRecipe(ctx: StrategyContext, roots: readonly string[], bounds: ContextBounds): Promise<StrategyResult> {
  const { docker, limits } = ctx.builder;
  const { loc, listed, bases } = await ctx.step("context", async () => {
    const loc = resolveRecipe(ctx.facts.labels, roots);
    const listed = await listContext(loc.contextDir, bounds, [loc.dockerfile]);
    const text = await readFile(join(loc.contextDir, loc.dockerfile)).then((b) => {
      if (b.length > MAX_DOCKERFILE) throw new ShadowError(Code.FailedPrecondition, `${loc.dockerfile} is larger than ${MAX_DOCKERFILE} bytes`);
      return b.toString("utf8");
    });
    ctx.log(`context ${loc.contextDir}: ${listed.entries.length} entries, ${listed.bytes} bytes${listed.skipped > 0 ? `, ${listed.skipped} special files left out` : ""}`);
    return { loc, listed, bases: baseImages(text) };
  });
  const registryBases = bases.filter(isRegistryReference);
  const pulled = registryBases.length > 0 ? await ctx.step("pull base", () => pullFresh(docker, registryBases, ctx)) : [];
  const imageId = await ctx.step("build", () => build(docker, packContext(loc.contextDir, listed.entries), loc.dockerfile, limits, ctx));
  const info = (await docker.getImage(imageId).inspect()) as { RootFS?: { Layers?: unknown } };
  const layerIds = Array.isArray(info.RootFS?.Layers) ? (info.RootFS.Layers as unknown[]).filter((l): l is string => typeof l === "string") : [];
  let layersReused = 0;
  while (layersReused < layerIds.length && layerIds[layersReused] === ctx.facts.diffIds[layersReused]) layersReused++;
  return {
    imageId,
    layerIds,
    layersReused,
    detail: `recipe ${loc.contextDir} (${loc.dockerfile}), no cache${pulled.length > 0 ? `, pulled ${pulled.join(", ")}` : ""}${registryBases.length > pulled.length ? ", a base not pulled (see the log)" : ""}; ${layersReused} of ${layerIds.length} layers as before`,
  };
}

/**
 * The images the Dockerfile's FROM lines name, in order; stage names, `scratch` and references
 * made of build arguments (`$BASE`) left out.
 */
export function baseImages(dockerfile: string): string[] {
  const stages = new Set<string>();
  const out: string[] = [];
  const lines = dockerfile.replace(/\\\r?\n/g, " ").split(/\r?\n/);
  for (const line of lines) {
    const words = line.trim().split(/\s+/);
    if (words[0]?.toUpperCase() !== "FROM") continue;
    const args = words.slice(1).filter((w) => !w.startsWith("--"));
    const image = args[0];
    if (image === undefined) continue;
    if (args[1]?.toUpperCase() === "AS" && args[2] !== undefined) stages.add(args[2].toLowerCase());
    if (image === "scratch" || image.includes("$") || stages.has(image.toLowerCase()) || out.includes(image)) continue;
    out.push(image);
  }
  return out.filter((i) => !stages.has(i.toLowerCase()));
}

/** A name with an explicit registry host (a dot, a port, or localhost before the first slash). */
export function isRegistryReference(image: string): boolean {
  const slash = image.indexOf("/");
  if (slash <= 0) return false;
  const host = image.slice(0, slash);
  return host.includes(".") || host.includes(":") || host === "localhost";
}

/** Pulls each image; the ones pulled (a failed pull with a local copy is logged and built on). */
async function pullFresh(docker: Docker, images: readonly string[], ctx: StrategyContext): Promise<string[]> {
  const pulled: string[] = [];
  for (const image of images) {
    try {
      const stream = (await docker.pull(image, { abortSignal: ctx.signal })) as NodeJS.ReadableStream;
      for await (const msg of jsonLines(stream)) {
        const err = errorOf(msg);
        if (err !== undefined) throw new Error(err);
        if (typeof msg["status"] === "string") ctx.log(`pull ${image}: ${msg["status"]}${typeof msg["id"] === "string" ? ` ${msg["id"]}` : ""}`);
      }
      pulled.push(image);
    } catch (err) {
      if (ctx.signal.aborted) throw cancelled(ctx.signal);
      const why = err instanceof Error ? err.message : String(err);
      const local = await docker.getImage(image).inspect().then(() => true, (e: unknown) => (isEngineNotFound(e) ? false : true));
      if (!local) throw new ShadowError(Code.BuildFailed, `base ${image} could not be pulled (${why}) and the builder has no copy`, { cause: err });
      ctx.log(`pull ${image} failed (${why}); building on the builder's copy`);
    }
  }
  return pulled;
}

/** Runs the build, its progress lines to ctx.log; the new image's id. A build that fails leaves no image of its steps behind. */
async function build(docker: Docker, context: NodeJS.ReadableStream, dockerfile: string, limits: BuildLimits, ctx: StrategyContext): Promise<string> {
  const steps = new StepImages();
  try {
    return await runBuild(docker, context, dockerfile, limits, ctx, steps);
  } catch (err) {
    await steps.remove(docker);
    throw err;
  }
}

/**
 * The images the classic builder committed for each step (` ---> 1d3ee3bf213d` after a step), the
 * one after a FROM left out (that is the base). Removed one by one, without pruning parents: a
 * base named by id and untagged would otherwise go too.
 */
class StepImages {
  private readonly ids: string[] = [];
  private afterFrom = false;

  see(line: string): void {
    if (/^Step \d+\/\d+ : FROM /i.test(line)) this.afterFrom = true;
    const m = /^ ---> ([0-9a-f]{12,64})$/.exec(line);
    if (m?.[1] === undefined) return;
    if (this.afterFrom) this.afterFrom = false;
    else this.ids.push(m[1]);
  }

  async remove(docker: Docker): Promise<void> {
    for (const id of this.ids.reverse()) await docker.getImage(id).remove({ noprune: true }).catch(() => undefined);
  }
}

async function runBuild(docker: Docker, context: NodeJS.ReadableStream, dockerfile: string, limits: BuildLimits, ctx: StrategyContext, steps: StepImages): Promise<string> {
  let packError: unknown;
  context.on("error", (err: unknown) => {
    packError = err;
  });
  let lastError: string | undefined;
  let imageId: string | undefined;
  try {
    // (the typings say cpusetcpus is a number; the API takes a cpuset string such as "1" or "0-1")
    const stream = await docker.buildImage(context, {
      dockerfile,
      nocache: true,
      pull: false,
      networkmode: "host",
      rm: true,
      forcerm: true,
      labels: { ...recipeLabels(ctx.facts.labels), ...ctx.labels },
      ...(limits.cpusetCpus !== undefined ? { cpusetcpus: limits.cpusetCpus } : {}),
      ...(limits.cpuPeriod !== undefined ? { cpuperiod: limits.cpuPeriod } : {}),
      ...(limits.cpuQuota !== undefined ? { cpuquota: limits.cpuQuota } : {}),
      ...(limits.cpuShares !== undefined ? { cpushares: limits.cpuShares } : {}),
      // memswap = memory: no swap beyond the limit.
      ...(limits.memoryBytes !== undefined ? { memory: limits.memoryBytes, memswap: limits.memoryBytes } : {}),
      abortSignal: ctx.signal,
    } as unknown as Docker.ImageBuildOptions);
    for await (const msg of jsonLines(stream)) {
      const err = errorOf(msg);
      if (err !== undefined) {
        lastError = err;
        ctx.log(err);
        continue;
      }
      if (typeof msg["stream"] === "string") {
        for (const raw of msg["stream"].split("\n")) {
          const line = raw.replace(/\r$/, "");
          if (line.trim() === "") continue;
          steps.see(line);
          ctx.log(line);
        }
      } else if (typeof msg["status"] === "string") {
        ctx.log(`${msg["status"]}${typeof msg["id"] === "string" ? ` ${msg["id"]}` : ""}`);
      }
      const aux = msg["aux"];
      if (typeof aux === "object" && aux !== null && typeof (aux as { ID?: unknown }).ID === "string") imageId = (aux as { ID: string }).ID;
    }
  } catch (err) {
    if (ctx.signal.aborted) throw cancelled(ctx.signal);
    if (packError !== undefined) throw ShadowError.from(packError, Code.BuildFailed);
    const why = err instanceof Error ? err.message : String(err);
    throw new ShadowError(Code.BuildFailed, `build failed: ${lastError ?? why}`, { cause: err });
  }
  if (ctx.signal.aborted) throw cancelled(ctx.signal);
  if (lastError !== undefined) throw new ShadowError(Code.BuildFailed, `build failed: ${lastError}`);
  if (packError !== undefined) throw ShadowError.from(packError, Code.BuildFailed);
  if (imageId === undefined) throw new ShadowError(Code.BuildFailed, "build ended without an image id");
  return imageId;
}

/** The source's recipe labels, so that the shadow can be rebuilt the same way. */
function recipeLabels(labels: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of [SOURCE_LABELS.recipeContext, SOURCE_LABELS.recipeDockerfile]) if (labels[k] !== undefined) out[k] = labels[k];
  return out;
}

function errorOf(msg: Record<string, unknown>): string | undefined {
  const detail = msg["errorDetail"];
  if (typeof detail === "object" && detail !== null && typeof (detail as { message?: unknown }).message === "string") return (detail as { message: string }).message;
  return typeof msg["error"] === "string" ? msg["error"] : undefined;
}

/** The engine's progress stream: one JSON object per line (a line that is not one is kept as text). */
async function* jsonLines(stream: NodeJS.ReadableStream): AsyncGenerator<Record<string, unknown>> {
  let rest = "";
  const parse = (line: string): Record<string, unknown> | undefined => {
    if (line.trim() === "") return undefined;
    try {
      const v: unknown = JSON.parse(line);
      return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : { stream: String(v) };
    } catch {
      return { stream: line };
    }
  };
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    rest += typeof chunk === "string" ? chunk : chunk.toString("utf8");
    const lines = rest.split("\n");
    rest = lines.pop() ?? "";
    for (const l of lines) {
      const m = parse(l);
      if (m !== undefined) yield m;
    }
  }
  const m = parse(rest);
  if (m !== undefined) yield m;
}

function cancelled(signal: AbortSignal): ShadowError {
  const r: unknown = signal.reason;
  return r instanceof ShadowError ? r : new ShadowError(Code.Cancelled, "the build was cancelled", { cause: r });
}
