/**
 * One rebuild job, start to end, on a leased builder: facts about the source image, the
 * strategy's build, a re-scan of the WHOLE result (not just the layer touched: a later package
 * step can undo a single-layer fix), then storage (pushed by digest to the registry, or kept in
 * the builder's engine), and the signature. A shadow whose re-scan does not reduce the matched
 * vulnerabilities is failed, not ready.
 */
import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { RebuildStepSchema, ShadowSchema, type RebuildJob, type RebuildStep, type Shadow } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import type { VulnMatch } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { signPayload, signingPayload } from "../../common/cosign.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { RegistryClient } from "../../common/registry-client.js";
import { storeSignature } from "../../common/registry-signature.js";
import type { VulnIndex } from "../vulns/index.js";
import { matchInventory } from "../vulns/matcher.js";
import { chainIds } from "../../agent/layers/chain-id.js";
import { imageFacts } from "./image-facts.js";
import { saveImage } from "./image-archive.js";
import { rescanImage } from "./image-rescan.js";
import { pushImage } from "./push-image.js";
import { addedBytes } from "./registry-gc.js";
import { BEHAVIOUR_REASONS, chooseStrategy } from "./strategy-choice.js";
import { SHADOW_LABELS, type Builder, type BuilderLease, type JobRunner, type Strategy, type StrategyContext, type VulnerablePackage } from "./types.js";

/** Where shadows go when a registry is configured. */
export interface ShadowRegistry {
  client: RegistryClient;
  /** host:port */
  host: string;
  repository: string;
}

export interface PipelineOptions {
  strategies: readonly Strategy[];
  /** Undefined: shadows stay in the builder's engine (the embedded default). */
  registry?: ShadowRegistry;
  /** The aggregator's image-signing key (PEM). */
  signingKeyPem: string;
  /** The source image's matches as scored (from the nodes' inventories). */
  matches: (imageId: string) => VulnMatch[];
  /** The live advisory index, for the re-scan. */
  index: VulnIndex;
  baseMap?: Record<string, string>;
  packageMirror?: string;
  /** Scratch space; one directory per job inside, removed after it. */
  workRoot: string;
  log: Logger;
}

/** The local repository name shadows are tagged with when no registry is configured. */
export const LOCAL_SHADOW_REPO = "shadowlayer/shadow";

const STEP_WEIGHTS: Record<string, number> = { plan: 5, build: 55, scan: 15, push: 15, sign: 10 };

export class RebuildPipeline implements JobRunner {
  constructor(private readonly o: PipelineOptions) {}

  /** Where shadows go, for `rebuilds`. */
  destination(): string {
    const r = this.o.registry;
    return r === undefined ? "local engine (no registry configured): shadows stay in the builder's engine" : `registry ${r.host}/${r.repository} (TLS, pushed by digest)`;
  }

  async run(job: RebuildJob, lease: BuilderLease, io: Parameters<JobRunner["run"]>[2]): Promise<Shadow> {
    const builder = lease.builder;
    const signal = AbortSignal.any([io.signal, lease.lost]);
    const workDir = join(this.o.workRoot, job.id.slice(0, 16));
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    const steps: RebuildStep[] = [];
    const log = this.o.log.child({ job: job.id.slice(0, 12), image: job.image, builder: builder.name });
    const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      if (signal.aborted) throw abortError(signal);
      const s = create(RebuildStepSchema, { name, state: "running", startedAt: timestampNow() });
      steps.push(s);
      io.update({ steps: [...steps], progress: progressOf(steps) });
      const t0 = performance.now();
      try {
        const r = await fn();
        s.state = "ok";
        return r;
      } catch (err) {
        s.state = "failed";
        s.detail = err instanceof Error ? err.message.slice(0, 512) : String(err).slice(0, 512);
        throw err;
      } finally {
        s.durationMs = Math.round((performance.now() - t0) * 10) / 10;
        io.update({ steps: [...steps], progress: progressOf(steps) });
        log.info({ step: name, state: s.state, ms: s.durationMs }, "rebuild step");
      }
    };
    try {
      return await this.runSteps(job, builder, { workDir, signal, step, io, steps });
    } finally {
      await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  private async runSteps(
    job: RebuildJob,
    builder: Builder,
    c: { workDir: string; signal: AbortSignal; step: StrategyContext["step"]; io: Parameters<JobRunner["run"]>[2]; steps: RebuildStep[] },
  ): Promise<Shadow> {
    const { step, io } = c;
    const baseMap = this.o.baseMap ?? {};
    const before = this.o.matches(job.imageId);
    const { facts, choice } = await step("plan", async () => {
      const facts = await imageFacts(builder.docker, job.imageId).catch((err: unknown) => {
        throw new ShadowError(Code.FailedPrecondition, `source image ${job.image || job.imageId} is not on builder ${builder.name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      });
      const choice = chooseStrategy(this.o.strategies, facts, job.reasons, { baseMap, ...(this.o.packageMirror !== undefined ? { packageMirror: this.o.packageMirror } : {}) }, job.strategy);
      io.update({ strategy: choice.strategy.name, strategyReason: choice.reason });
      io.log(`strategy ${choice.strategy.name}: ${choice.reason}`);
      return { facts, choice };
    });
    const now = new Date();
    const labels: Record<string, string> = {
      [SHADOW_LABELS.created]: now.toISOString(),
      [SHADOW_LABELS.rebuiltAt]: now.toISOString(),
      [SHADOW_LABELS.reason]: job.reasons.join(";"),
      [SHADOW_LABELS.sourceImage]: job.imageId,
      // A job an operator forced for an image names no layer: say so rather than leave the label empty.
      [SHADOW_LABELS.sourceLayer]: job.sourceLayer !== "" ? job.sourceLayer : "none (forced by an operator)",
      [SHADOW_LABELS.strategy]: choice.strategy.name,
      [SHADOW_LABELS.risk]: String(Math.round(job.risk * 10) / 10),
      [SHADOW_LABELS.job]: job.id,
    };
    const result = await step("build", () =>
      choice.strategy.run({
        jobId: job.id,
        facts,
        reasons: [...job.reasons],
        sourceLayer: job.sourceLayer,
        vulnerable: vulnerablePackages(before, job.reasons),
        builder,
        labels,
        baseMap,
        ...(this.o.packageMirror !== undefined ? { packageMirror: this.o.packageMirror } : {}),
        workDir: join(c.workDir, "build"),
        log: io.log,
        step,
        signal: c.signal,
      }),
    );
    const shadow = create(ShadowSchema, {
      imageId: result.imageId,
      labels,
      layerIds: result.layerIds,
      layersReused: result.layersReused,
      builtAt: timestampFromDate(now),
      vulnsBefore: before.length,
    });
    io.log(`built ${result.imageId.slice(0, 19)}: ${result.detail}`);
    const after = await step("scan", async () => {
      const inv = await rescanImage(builder, result.imageId, join(c.workDir, "scan"));
      return matchInventory(this.o.index, inv);
    });
    shadow.vulnsAfter = after.length;
    const sizes = await layerSizes(builder, result.imageId, result.layerIds);
    shadow.totalBytes = BigInt(sizes.reduce((a, l) => a + l.size, 0));
    shadow.addedBytes = BigInt(addedBytes(facts.diffIds, sizes));
    const fixedNow = verdict(job.reasons, before, after);
    if (fixedNow !== undefined) throw Object.assign(new ShadowError(Code.BuildFailed, fixedNow), { shadow });
    const r = this.o.registry;
    if (r === undefined) {
      await step("push", async () => {
        const tag = `job-${job.id.slice(0, 12)}`;
        await builder.docker.getImage(result.imageId).tag({ repo: LOCAL_SHADOW_REPO, tag });
        shadow.localOnly = true;
        shadow.reference = result.imageId;
        io.log(`kept in ${builder.name}'s engine as ${LOCAL_SHADOW_REPO}:${tag} (no registry configured)`);
      });
    } else {
      await step("push", async () => {
        const saved = await saveImage(builder.docker, result.imageId, join(c.workDir, "push"));
        const pushed = await pushImage(r.client, r.repository, saved, { tag: `job-${job.id.slice(0, 12)}` });
        shadow.registry = `${r.host}/${r.repository}`;
        shadow.manifestDigest = pushed.manifestDigest;
        shadow.reference = pushed.reference;
        io.log(`pushed ${pushed.reference} (${pushed.compressedBytes} bytes compressed)`);
      });
    }
    await step("sign", async () => {
      const payload = signingPayload({ dockerReference: shadow.registry || "local", digest: shadow.localOnly ? shadow.imageId : shadow.manifestDigest });
      shadow.signaturePayload = payload;
      shadow.signature = signPayload(payload, this.o.signingKeyPem);
      if (r === undefined) shadow.signatureRef = "aggregator";
      else shadow.signatureRef = await storeSignature(r.client, r.repository, shadow.manifestDigest, payload, shadow.signature);
    });
    return shadow;
  }
}

function progressOf(steps: readonly RebuildStep[]): number {
  let p = 0;
  for (const s of steps) if (s.state === "ok") p += STEP_WEIGHTS[s.name] ?? 0;
  return Math.min(100, p);
}

function abortError(signal: AbortSignal): ShadowError {
  const r: unknown = signal.reason;
  return r instanceof ShadowError ? r : new ShadowError(Code.Cancelled, r instanceof Error ? r.message : "the job was cancelled");
}

/** The packages behind the job's advisories, with the version that fixes each (for `patch`). */
export function vulnerablePackages(matches: readonly VulnMatch[], reasons: readonly string[]): VulnerablePackage[] {
  const wanted = new Set(reasons);
  const out = new Map<string, VulnerablePackage>();
  for (const m of matches) {
    if (!wanted.has(m.id) && !m.aliases.some((a) => wanted.has(a))) continue;
    if (m.fixedVersion === "") continue;
    const key = `${m.packageType}\0${m.package}`;
    const prev = out.get(key);
    // The highest fixed version wins when several advisories name one package; a lexical
    // comparison is enough to pick between them for the log, the strategy compares properly.
    if (prev === undefined || prev.fixedVersion < m.fixedVersion) {
      out.set(key, { name: m.package, sourceName: m.advisoryPackage || m.package, installedVersion: m.installedVersion, fixedVersion: m.fixedVersion, type: m.packageType, layerId: m.layerId, advisory: m.id });
    }
  }
  return [...out.values()];
}

/**
 * Undefined when the shadow is an improvement: for advisory reasons, none of the job's advisories
 * is matched any more and the total went down; for behaviour reasons only, it is not worse.
 */
export function verdict(reasons: readonly string[], before: readonly VulnMatch[], after: readonly VulnMatch[]): string | undefined {
  const advisories = reasons.filter((r) => !BEHAVIOUR_REASONS.has(r));
  if (advisories.length === 0) {
    return after.length > before.length ? `re-scan: the shadow matches ${after.length} vulnerabilities, the source ${before.length}: not ready` : undefined;
  }
  const still = advisories.filter((a) => after.some((m) => m.id === a || m.aliases.includes(a)));
  if (still.length > 0) return `re-scan: the shadow still matches ${still.slice(0, 5).join(", ")}${still.length > 5 ? ` and ${still.length - 5} more` : ""}: not ready`;
  if (after.length >= before.length) return `re-scan: ${before.length} vulnerabilities before, ${after.length} after: not reduced, not ready`;
  return undefined;
}

/**
 * Each layer's uncompressed size, bottom first: on this host's engine the layerdb's own `size`
 * record per chain id; on a remote builder the image history's non-empty entries, matched to the
 * layers by count (an empty step that still made a layer would shift them: a remote builder's
 * figure is an estimate).
 */
async function layerSizes(builder: Builder, imageId: string, diffIds: readonly string[]): Promise<Array<{ diffId: string; size: number }>> {
  const root = builder.localRoot;
  if (root !== undefined) {
    const chains = chainIds([...diffIds]);
    return Promise.all(
      diffIds.map(async (diffId, i) => {
        const text = await readFile(join(root, "image", "overlay2", "layerdb", "sha256", (chains[i] ?? "").replace(/^sha256:/, ""), "size"), "utf8").catch(() => "0");
        return { diffId, size: Number.parseInt(text.trim(), 10) || 0 };
      }),
    );
  }
  const history = (await builder.docker.getImage(imageId).history()) as Array<{ Size?: number }>;
  const sized = [...history].reverse().filter((h) => (h.Size ?? 0) > 0);
  const offset = diffIds.length - sized.length;
  return diffIds.map((diffId, i) => ({ diffId, size: i - offset >= 0 ? (sized[i - offset]?.Size ?? 0) : 0 }));
}
