/**
 * Resolves an image into its layers, bottom first: diffID, chain id, storage directory, size and
 * the history step that made it. An image's layers never change, so results are cached by image id.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type Docker from "dockerode";
import { Code, ShadowError } from "../../common/errors.js";
import { chainIds } from "./chain-id.js";
import { parseConfigHistory, parseImageInspect, stepsForLayers, type HistoryStep } from "../runtime/engine-facts.js";

export interface ImageLayer {
  diffId: string;
  chainId: string;
  /** Storage-driver directory id (overlay2/<cacheId>), "" if unknown. */
  cacheId: string;
  /** The layer's own files (overlay2/<cacheId>/diff). */
  dir: string;
  sizeBytes: bigint;
  createdBy: string;
  created: string;
  comment: string;
}

export interface ResolvedImage {
  id: string;
  tags: string[];
  driver: string;
  /** Bottom first. */
  layers: ImageLayer[];
  /** Where the names came from: the image config on disk, or the history API. */
  historySource: "imagedb" | "api" | "none";
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** overlay2/<cacheId>/diff -> cacheId */
export function cacheIdOfDir(dir: string): string {
  const m = /\/([^/]+)\/diff\/?$/.exec(dir);
  return m?.[1] ?? "";
}

export class ImageLayerResolver {
  private readonly cache = new Map<string, ResolvedImage>();

  constructor(
    private readonly docker: Docker,
    /** The engine's data root as seen by the agent (DockerRootDir), e.g. /var/lib/docker. */
    private readonly dockerRoot: string,
  ) {}

  clear(): void {
    this.cache.clear();
  }

  async resolve(imageId: string): Promise<ResolvedImage> {
    const hit = this.cache.get(imageId);
    if (hit !== undefined) return hit;
    const facts = parseImageInspect(await this.docker.getImage(imageId).inspect());
    const chains = chainIds(facts.diffIds);
    const driverRoot = join(this.dockerRoot, "image", facts.driver);
    const hex = facts.id.replace(/^sha256:/, "");

    let history: HistoryStep[] = [];
    let historySource: ResolvedImage["historySource"] = "none";
    const config = readText(join(driverRoot, "imagedb", "content", "sha256", hex));
    if (config !== undefined) {
      try {
        history = parseConfigHistory(JSON.parse(config));
        historySource = "imagedb";
      } catch {
        history = [];
      }
    }
    if (historySource === "none") {
      history = await this.historyFromApi(imageId, facts.diffIds.length);
      if (history.length > 0) historySource = "api";
    }
    const steps = stepsForLayers(history, facts.diffIds.length);
    // Inspect lists directories top first; layers are bottom first.
    const inspectDirs = [...facts.layerDirs].reverse();
    const layers = facts.diffIds.map((diffId, i): ImageLayer => {
      const chainId = chains[i] ?? diffId;
      const layerDb = join(driverRoot, "layerdb", "sha256", chainId.replace(/^sha256:/, ""));
      const fromDb = readText(join(layerDb, "cache-id"));
      const dirFromInspect = inspectDirs[i] ?? "";
      const cacheId = fromDb ?? cacheIdOfDir(dirFromInspect);
      const size = readText(join(layerDb, "size"));
      const step = steps[i];
      return {
        diffId,
        chainId,
        cacheId,
        dir: fromDb !== undefined ? join(this.dockerRoot, facts.driver, fromDb, "diff") : dirFromInspect,
        sizeBytes: size !== undefined && /^\d+$/.test(size) ? BigInt(size) : 0n,
        createdBy: step?.createdBy ?? "",
        created: step?.created ?? "",
        comment: step?.comment ?? "",
      };
    });
    if (layers.some((l) => l.dir === "")) {
      throw new ShadowError(Code.FailedPrecondition, `image ${facts.id}: storage driver ${facts.driver || "?"} does not expose layer directories (overlay2 is required)`);
    }
    const resolved: ResolvedImage = { id: facts.id, tags: facts.tags, driver: facts.driver, layers, historySource };
    this.cache.set(imageId, resolved);
    if (imageId !== facts.id) this.cache.set(facts.id, resolved);
    return resolved;
  }

  /**
   * The history API has no empty-layer flag: pair steps with layers only when the count of steps
   * with a non-zero size equals the layer count, else give no names rather than wrong ones.
   */
  private async historyFromApi(imageId: string, count: number): Promise<HistoryStep[]> {
    let raw: unknown;
    try {
      raw = await this.docker.getImage(imageId).history();
    } catch {
      return [];
    }
    if (!Array.isArray(raw)) return [];
    const steps = raw
      .map((e: unknown) => (typeof e === "object" && e !== null ? (e as Record<string, unknown>) : {}))
      .reverse()
      .map((e) => ({
        createdBy: typeof e["CreatedBy"] === "string" ? e["CreatedBy"] : "",
        created: typeof e["Created"] === "number" ? new Date(e["Created"] * 1000).toISOString() : "",
        comment: typeof e["Comment"] === "string" ? e["Comment"] : "",
        emptyLayer: e["Size"] === 0,
      }));
    return steps.filter((s) => !s.emptyLayer).length === count ? steps : [];
  }
}

/** A readable layer name from its history step: "RUN apk add curl", "COPY file:… in /app". */
export function layerName(createdBy: string, comment: string, index: number): string {
  let s = createdBy.trim();
  // BuildKit writes "RUN |1 A=1 /bin/sh -c make" and "RUN /bin/sh -c make # buildkit".
  s = s.replace(/^RUN\s+(?=\||\/bin\/sh -c )/, "").replace(/\s+# buildkit$/, "");
  // Build args as the classic builder records them: "|<n> A=1 B=2 /bin/sh -c …".
  s = s.replace(/^\|\d+\s+(\S+=\S*\s+)*/, "");
  const nop = /^\/bin\/sh -c #\(nop\)\s*/;
  if (nop.test(s)) s = s.replace(nop, "");
  else if (s.startsWith("/bin/sh -c ")) s = `RUN ${s.slice("/bin/sh -c ".length)}`;
  s = s.replace(/\s+/g, " ").replace(/\b(file|dir):([0-9a-f]{12})[0-9a-f]{52}/g, "$1:$2");
  if (s === "") s = comment !== "" ? comment : `layer ${index}`;
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
