/**
 * `rebase`, as `crane rebase` does it: the image's base layers are swapped for a newer base's,
 * the layers above are kept byte for byte (same diffIDs), and the config is the source's with its
 * rootfs, history and base labels rewritten. No build runs: the result is composed from the two
 * images' saved layers and loaded into the builder's engine.
 *
 * Which base: the source's OCI labels `org.opencontainers.image.base.name` (and `base.digest`,
 * tried first as `name@digest`) or, without them, a key of the policy's base mapping whose image
 * is a prefix of the source. The old base's diffIDs must be a prefix of the source's, else the
 * image is not built on it and nothing is rebased.
 *
 * What "newer" means: the base that the policy mapping (old base name or image id → new base
 * name) names, the operator's word; else the one the image's `shadowlayer.base.successor` label
 * names (the image's author's word: set on the app, or on the base and inherited by every image
 * built FROM it), else the old base's own label. The newer base is looked up on the builder by
 * name and pulled there when absent and a registry reference named by the mapping (a name from a
 * label is never pulled); it must be a different image for the same OS and architecture.
 *
 * "Not safe in general" (crane's words) because the app layers were built against the old base;
 * the pipeline's re-scan of the whole result is what says whether the shadow is any better.
 */
import { join } from "node:path";
import { Code, ShadowError } from "../../../common/errors.js";
import { saveImage, loadImage } from "../image-archive.js";
import { composeConfig, layerSteps, parseImageConfig } from "../image-config.js";
import { imageFacts } from "../image-facts.js";
import { imageOnBuilder } from "../image-on-builder.js";
import { SOURCE_LABELS, type ImageFacts, type Strategy, type StrategyContext, type StrategyResult } from "../types.js";

/** A label on a base image naming the base that replaces it. */
export const BASE_SUCCESSOR_LABEL = SOURCE_LABELS.baseSuccessor;
/** Reasons a rebase cannot help with: the layers above the base would be kept as they are. */
const NOT_FOR_REBASE = new Set(["drift", "performance-anomaly"]);
/** Mapping keys tried as bases when the source has no base label. */
const MAX_MAPPING_PROBES = 64;

/** The mapping's entry for `key`: own string entries only (a label reading `__proto__` is just a name). */
function mappedBase(baseMap: Record<string, string>, key: string): string | undefined {
  const v = Object.hasOwn(baseMap, key) ? baseMap[key] : undefined;
  return typeof v === "string" && v !== "" ? v : undefined;
}

function isPrefix(base: readonly string[], of: readonly string[]): boolean {
  return base.length > 0 && base.length < of.length && base.every((d, i) => of[i] === d);
}

/** The base the source declares: its name, and name@digest when the digest is given too. */
function declaredBase(facts: ImageFacts): { name: string; refs: string[] } | undefined {
  const name = facts.labels[SOURCE_LABELS.baseName];
  if (name === undefined || name === "") return undefined;
  const digest = facts.labels[SOURCE_LABELS.baseDigest];
  const repo = name.replace(/@sha256:[0-9a-f]{64}$/, "").replace(/:[^/:]+$/, "");
  const refs = digest !== undefined && /^sha256:[0-9a-f]{64}$/.test(digest) ? [`${repo}@${digest}`, name] : [name];
  return { name, refs };
}

export const rebaseStrategy: Strategy = {
  name: "rebase",

  applies(facts, reasons, ctx) {
    if (!reasons.some((r) => !NOT_FOR_REBASE.has(r))) return undefined;
    const base = declaredBase(facts);
    if (base === undefined) return undefined;
    const mapped = mappedBase(ctx.baseMap, base.name);
    const newer = mapped ?? facts.labels[BASE_SUCCESSOR_LABEL];
    if (newer === undefined || newer === "" || newer === base.name) return undefined;
    return `base label ${SOURCE_LABELS.baseName}=${base.name} and a newer base ${newer} (${mapped !== undefined ? "policy mapping" : `label ${BASE_SUCCESSOR_LABEL}`})`;
  },

  async run(ctx: StrategyContext): Promise<StrategyResult> {
    const { docker } = ctx.builder;
    const src = ctx.facts;
    const found = await ctx.step("find bases", async () => {
      const old = await oldBase(ctx);
      const mapped = mappedBase(ctx.baseMap, old.name) ?? mappedBase(ctx.baseMap, old.facts.imageId);
      const labelled = [src.labels[BASE_SUCCESSOR_LABEL], old.facts.labels[BASE_SUCCESSOR_LABEL]].find((l) => l !== undefined && l !== "" && l !== old.name);
      const newName = mapped ?? labelled;
      if (newName === undefined) {
        throw new ShadowError(Code.FailedPrecondition, `no newer base for ${old.name}: the policy's base mapping has none and neither the image nor its base has a ${BASE_SUCCESSOR_LABEL} label`);
      }
      // A successor named by a label must already be on the builder: labels never make the engine pull.
      const next = await imageOnBuilder(docker, newName, mapped !== undefined, ctx.signal, ctx.log);
      if (next.imageId === old.facts.imageId) throw new ShadowError(Code.FailedPrecondition, `the newer base ${newName} is the image ${src.name} is already built on`);
      if (next.os !== src.os || next.architecture !== src.architecture) {
        throw new ShadowError(Code.FailedPrecondition, `the newer base ${newName} is ${next.os}/${next.architecture}, the image ${src.os}/${src.architecture}`);
      }
      return { old, newName, next };
    });
    const { old, newName, next } = found;
    const appCount = src.diffIds.length - old.facts.diffIds.length;
    ctx.log(`rebasing ${src.name} from ${old.name} onto ${newName}: ${appCount} app layers kept`);
    const [source, base] = await ctx.step("save images", () => Promise.all([saveImage(docker, src.imageId, join(ctx.workDir, "source")), saveImage(docker, next.imageId, join(ctx.workDir, "base"))]));
    if (ctx.signal.aborted) throw new ShadowError(Code.Cancelled, "rebase cancelled");
    const imageId = await ctx.step("compose and load", async () => {
      const srcConfig = parseImageConfig(source.config, `config of ${src.name}`);
      const baseConfig = parseImageConfig(base.config, `config of ${newName}`);
      // The source's history starts with its old base's entries (the engine's history lists them all).
      const appHistory = srcConfig.history.slice(old.facts.history.length);
      if (layerSteps(appHistory) !== appCount) ctx.log(`history of ${src.name} does not pair with its layers; kept as the app's entries anyway`);
      const digest = next.repoDigests.map((r) => r.slice(r.indexOf("@") + 1)).find((d) => /^sha256:[0-9a-f]{64}$/.test(d));
      const appLayers = source.layers.slice(old.facts.diffIds.length);
      const config = composeConfig(srcConfig, {
        diffIds: [...baseConfig.diffIds, ...appLayers.map((l) => l.diffId)],
        history: [...baseConfig.history, ...appHistory],
        labels: { [SOURCE_LABELS.baseName]: newName, [SOURCE_LABELS.baseDigest]: digest ?? null, ...ctx.labels },
      });
      return loadImage(docker, { config, layers: [...base.layers, ...appLayers] });
    });
    return {
      imageId,
      layerIds: [...next.diffIds, ...src.diffIds.slice(old.facts.diffIds.length)],
      layersReused: appCount,
      detail: `base ${old.name} -> ${newName}, ${appCount} app layers kept`,
    };
  },
};

/** The source's old base on the builder, checked to be a prefix of its layers. */
async function oldBase(ctx: StrategyContext): Promise<{ name: string; facts: ImageFacts }> {
  const src = ctx.facts;
  const declared = declaredBase(src);
  if (declared !== undefined) {
    let last: ImageFacts | undefined;
    for (const ref of declared.refs) {
      try {
        last = await imageOnBuilder(ctx.builder.docker, ref, mappedBase(ctx.baseMap, declared.name) !== undefined, ctx.signal, ctx.log);
      } catch (err) {
        if (ref === declared.refs.at(-1)) throw err;
        continue;
      }
      if (isPrefix(last.diffIds, src.diffIds)) return { name: declared.name, facts: last };
    }
    throw new ShadowError(Code.FailedPrecondition, `image ${src.name} is not built on ${declared.name}: its layers are not a prefix of the image's`);
  }
  // No label: a mapping key whose image is a prefix of the source (the longest one).
  let best: { name: string; facts: ImageFacts } | undefined;
  for (const name of Object.keys(ctx.baseMap).slice(0, MAX_MAPPING_PROBES)) {
    const f = await imageFacts(ctx.builder.docker, name).catch(() => undefined);
    if (f !== undefined && isPrefix(f.diffIds, src.diffIds) && (best === undefined || f.diffIds.length > best.facts.diffIds.length)) best = { name, facts: f };
  }
  if (best === undefined) throw new ShadowError(Code.FailedPrecondition, `image ${src.name} has no ${SOURCE_LABELS.baseName} label and is not built on any base the policy maps`);
  return best;
}
