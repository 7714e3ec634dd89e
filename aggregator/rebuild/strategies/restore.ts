/**
 * `restore`, for the drift and performance-anomaly reasons: the image's layers on the builder's
 * disk are verified against their diffIDs (layer-verify.ts: layerdb's tar-split plus the layer's
 * directory, hashed, and each file's checksum compared, so the changed files are named). From the
 * first layer that no longer matches up, the content is made again from a good source (the
 * registry the image came from, by its manifest digest, else its recipe built with no cache) and
 * squashed into ONE new layer: its diffID is new, so the engine unpacks it into a new directory;
 * a layer with the old diffID would be mapped onto the tampered directory again. The layers below
 * are kept byte for byte (the verified tars are loaded with them).
 *
 * When every layer matches (the drift was in the container's writable layer, or the anomaly had
 * no trace on disk) a shadow is still made, so that the switch lands on directories no process of
 * the suspect container ever had: the layers from the one the job's reasons name (its source
 * layer, when that is an image layer; else the top layer) up are squashed from the tars just
 * verified, which are the image's own content byte for byte.
 *
 * No good source (no registry copy, no recipe, or neither can give the layers) fails the job with
 * what was tried. The verification reads this host's disk: a remote builder cannot restore.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { chainIds } from "../../../agent/layers/chain-id.js";
import { Code, ShadowError } from "../../../common/errors.js";
import { saveImage, loadImage } from "../image-archive.js";
import { composeConfig, parseImageConfig, type HistoryEntry } from "../image-config.js";
import { imageFacts } from "../image-facts.js";
import { verifyLayers, type LayerCheck } from "../layer-verify.js";
import { registryLayers, type RegistryCopy } from "../registry-layers.js";
import { squashLayers } from "../squash-layers.js";
import type { ImageFacts, SavedLayer, Strategy, StrategyContext, StrategyResult } from "../types.js";

const RESTORE_REASONS = new Set(["drift", "performance-anomaly"]);

export interface RestoreOptions {
  /** The registry copy of an image by one of its repo digests (`host/repo@sha256:…`), when a registry is configured. */
  registryFor?: (repoDigest: string) => RegistryCopy | undefined;
  /**
   * The configured recipe strategy: a recipe is a good source only through it, so its label is
   * held to the same --recipe-root rule and context bounds (the labels are the image's to choose).
   */
  recipe?: Strategy;
}

/** Where the good layers came from, and what to remove once they are used. */
interface GoodLayers {
  layers: SavedLayer[];
  source: string;
  dispose: () => Promise<void>;
}

function describeTamper(c: LayerCheck): string {
  const files = c.changed.map((f) => `${f.path} (${f.reason})`);
  return `layer ${c.index} (${c.diffId}) does not match its diffID on disk (it hashes to ${c.actual})${files.length > 0 ? `; changed: ${files.join(", ")}` : ""}`;
}

/** The image's config as the engine stores it (its digest is the image id, checked). */
async function sourceConfig(root: string, facts: ImageFacts): Promise<Buffer> {
  const hex = facts.imageId.replace(/^sha256:/, "");
  const buf = await readFile(join(root, "image", "overlay2", "imagedb", "content", "sha256", hex));
  if (`sha256:${createHash("sha256").update(buf).digest("hex")}` !== facts.imageId) {
    throw new ShadowError(Code.FailedPrecondition, `the stored config of ${facts.name} does not match its id`);
  }
  return buf;
}

/** History entries for the layers below `from`, then one for the squashed layer. */
function restoredHistory(history: readonly HistoryEntry[], layers: number, from: number, what: string): HistoryEntry[] {
  const kept: HistoryEntry[] = [];
  let made = 0;
  if (history.filter((h) => h.empty_layer !== true).length === layers) {
    for (const h of history) {
      if (h.empty_layer !== true && made === from) break;
      if (h.empty_layer !== true) made++;
      kept.push(h);
    }
  }
  return [...kept, { created: new Date().toISOString(), created_by: what, comment: "shadowlayer restore" }];
}

/** A restore strategy; with `registryFor`, registry copies of source images are a good source too. */
export function restoreWith(opts: RestoreOptions = {}): Strategy {
  const copies = (facts: ImageFacts): RegistryCopy[] =>
    opts.registryFor === undefined ? [] : facts.repoDigests.map((d) => opts.registryFor?.(d)).filter((c): c is RegistryCopy => c !== undefined);

  async function fromRegistry(ctx: StrategyContext, from: number, tried: string[]): Promise<GoodLayers | undefined> {
    for (const copy of copies(ctx.facts)) {
      try {
        const layers = await registryLayers(copy, ctx.facts, ctx.facts.diffIds, from, join(ctx.workDir, "registry"));
        return { layers, source: `registry ${copy.repository}@${copy.digest}`, dispose: async () => undefined };
      } catch (err) {
        tried.push(`registry ${copy.repository}: ${ShadowError.from(err).message}`);
      }
    }
    return undefined;
  }

  /** Why the configured recipe can serve as a source for this image, or undefined. */
  const recipeFor = (facts: ImageFacts, reasons: readonly string[]): string | undefined => opts.recipe?.applies(facts, reasons, { baseMap: {} });

  async function fromRecipe(ctx: StrategyContext, from: number, tried: string[]): Promise<GoodLayers | undefined> {
    const recipe = opts.recipe;
    const why = recipeFor(ctx.facts, ctx.reasons);
    if (recipe === undefined || why === undefined) return undefined;
    const { docker } = ctx.builder;
    let id: string | undefined;
    const dispose = async (): Promise<void> => {
      if (id !== undefined) await docker.getImage(id).remove({ force: true }).catch(() => undefined);
    };
    try {
      id = (await recipe.run({ ...ctx, labels: {}, workDir: join(ctx.workDir, "recipe-build") })).imageId;
      const rebuilt = await imageFacts(docker, id);
      const src = ctx.facts.diffIds;
      if (src.slice(0, from).some((d, i) => rebuilt.diffIds[i] !== d) || rebuilt.diffIds.length <= from) {
        throw new ShadowError(Code.FailedPrecondition, `the recipe does not rebuild the layers below layer ${from} as they are`);
      }
      if (chainIds(rebuilt.diffIds)[from] === chainIds(src)[from]) {
        throw new ShadowError(Code.FailedPrecondition, `the recipe makes layer ${from} byte for byte again, so the engine maps it onto the tampered directory; a registry copy is needed`);
      }
      const saved = await saveImage(docker, id, join(ctx.workDir, "recipe"));
      return { layers: saved.layers.slice(from), source: why, dispose };
    } catch (err) {
      await dispose();
      tried.push(`${why}: ${ShadowError.from(err).message}`);
      return undefined;
    }
  }

  return {
    name: "restore",

    applies(facts, reasons) {
      const why = reasons.filter((r) => RESTORE_REASONS.has(r));
      if (why.length === 0) return undefined;
      const recipe = recipeFor(facts, reasons);
      const sources = [...(copies(facts).length > 0 ? ["the registry copy"] : []), ...(recipe !== undefined ? [recipe] : [])];
      const remade = sources.length > 0 ? `changed ones re-made from ${sources.join(" or ")}` : "no registry copy or recipe to re-make a changed one from";
      return `${why.join(", ")}: layers verified against their diffIDs on the builder; ${remade}`;
    },

    async run(ctx: StrategyContext): Promise<StrategyResult> {
      const root = ctx.builder.localRoot;
      const src = ctx.facts;
      if (root === undefined) throw new ShadowError(Code.FailedPrecondition, `restore verifies layers on the builder's disk: builder ${ctx.builder.name} is not this host's engine`);
      const tarDir = join(ctx.workDir, "verified");
      await mkdir(tarDir, { recursive: true });
      const checks = await ctx.step("verify layers", () => verifyLayers(root, src.diffIds, { tarDir, signal: ctx.signal }));
      const bad = checks.find((c) => !c.ok);
      let from: number;
      if (bad !== undefined) {
        from = bad.index;
        for (const c of checks.filter((x) => !x.ok)) ctx.log(describeTamper(c));
      } else {
        const named = src.diffIds.indexOf(ctx.sourceLayer);
        from = named >= 0 ? named : src.diffIds.length - 1;
        ctx.log(`every layer matches its diffID; re-making layer ${from} up for a fresh directory`);
      }
      const tried: string[] = [];
      const verified: GoodLayers = {
        layers: checks.slice(from).map((c) => ({ diffId: c.diffId, path: c.tarPath ?? "", size: c.size })),
        source: "the layers verified on disk",
        dispose: async () => undefined,
      };
      const good =
        bad === undefined ? verified : await ctx.step("re-materialise", async () => (await fromRegistry(ctx, from, tried)) ?? (await fromRecipe(ctx, from, tried)));
      if (good === undefined) {
        throw new ShadowError(Code.FailedPrecondition, `no good source for ${bad !== undefined ? describeTamper(bad) : src.name}: ${tried.length > 0 ? tried.join("; ") : "no registry copy (repo digest) and no recipe label"}`);
      }
      try {
        const squashed = await ctx.step("squash", () => squashLayers(good.layers.map((l) => l.path), join(ctx.workDir, "squashed.tar"), { marker: `${ctx.jobId} ${new Date().toISOString()}` }));
        if (src.diffIds.includes(squashed.diffId)) throw new ShadowError(Code.Internal, `the squashed layer has the diffID of a layer of ${src.name}`);
        const imageId = await ctx.step("compose and load", async () => {
          const parsed = parseImageConfig(await sourceConfig(root, src), `config of ${src.name}`);
          const diffIds = [...src.diffIds.slice(0, from), squashed.diffId];
          const what = `shadowlayer restore: layers ${from}-${src.diffIds.length - 1} re-made from ${good.source}, squashed`;
          const config = composeConfig(parsed, { diffIds, history: restoredHistory(parsed.history, src.diffIds.length, from, what), labels: ctx.labels });
          const kept = checks.slice(0, from).map((c) => ({ diffId: c.diffId, path: c.tarPath ?? "", size: c.size }));
          return loadImage(ctx.builder.docker, { config, layers: [...kept, { diffId: squashed.diffId, path: squashed.path, size: squashed.size }] });
        });
        const head = bad !== undefined ? describeTamper(bad) : "no layer changed on disk";
        return {
          imageId,
          layerIds: [...src.diffIds.slice(0, from), squashed.diffId],
          layersReused: from,
          detail: `${head}; layers ${from}-${src.diffIds.length - 1} re-made from ${good.source} as ${squashed.diffId.slice(0, 19)}`,
        };
      } finally {
        await good.dispose();
      }
    },
  };
}

/** Restore from the verified layers only (`restoreWith` adds a registry copy and a recipe as sources). */
export const restoreStrategy: Strategy = restoreWith();
