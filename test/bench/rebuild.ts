/**
 * `npm run bench:rebuild`: the rebuild stage on this host, end to end, on a 5-layer test image
 * (demo base, a base layer with a vulnerable glibc in its dpkg database, three app layers), with
 * a real TLS registry with basic auth on loopback:
 *   rebase_s   a `rebase` job through the pipeline: plan, build, re-scan, push by digest, sign
 *   recipe_s   a `recipe` job likewise (the base tag moved to the fixed build first, as upstream
 *              moves `debian:12`)
 *   restore_s  a `restore` job after a file of the app's first layer was changed on disk (re-made
 *              from the recipe, the base layers kept)
 *   queue_10k_ms  10,000 rebuild requests planned, deduped and stored
 *   served_p99_ratio_during_build  p99 of a busybox httpd under a bounded loopback load during a
 *              CPU-heavy recipe build on the default builder limits, over the same without a
 *              build, measured in alternating rounds in this one run
 *   shadow_added_bytes  bytes the rebase shadow adds beyond its source (shared layers once)
 * Last line: one JSON object with those keys and a few more.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { chainIds } from "../../agent/layers/chain-id.js";
import { availableParallelism, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Level } from "level";
import { RebuildJobSchema, type RebuildJob, type Shadow } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { generateSigningKeys } from "../../common/cosign.js";
import { silentLogger } from "../../common/log.js";
import { RegistryClient } from "../../common/registry-client.js";
import { defaultLimits } from "../../aggregator/rebuild/builder-config.js";
import { imageFacts } from "../../aggregator/rebuild/image-facts.js";
import { rescanImage } from "../../aggregator/rebuild/image-rescan.js";
import { RebuildPipeline } from "../../aggregator/rebuild/pipeline.js";
import { rebaseStrategy } from "../../aggregator/rebuild/strategies/rebase.js";
import { recipeStrategy } from "../../aggregator/rebuild/strategies/recipe.js";
import { restoreWith } from "../../aggregator/rebuild/strategies/restore.js";
import { SOURCE_LABELS, type Builder, type BuilderLease, type JobRunner } from "../../aggregator/rebuild/types.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { matchInventory } from "../../aggregator/vulns/matcher.js";
import { APP_MESSAGE_PATH, buildRebuildImages, type RebuildImages } from "../harness/rebuild-images.js";
import { startRegistry, type TestRegistry } from "../harness/registry.js";
import { testEngine } from "../harness/engine.js";
import { startForkingService } from "./forking-service.js";
import { measureQueue10k } from "./rebuild-queue.js";
import { interleavedP99 } from "./served-latency.js";

const ADVISORY = "DEBIAN-CVE-2023-4911";
const FIXTURE = join(dirname(new URL(import.meta.url).pathname), "..", "..", "..", "test", "fixtures", "feeds", "osv-dir", "debian");

function lease(builder: Builder): BuilderLease {
  return { builder, lost: new AbortController().signal, release: () => undefined };
}

const io: Parameters<JobRunner["run"]>[2] = { signal: new AbortController().signal, update: () => undefined, log: () => undefined };

async function timed<T>(fn: () => Promise<T>): Promise<{ s: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { s: Math.round((performance.now() - t0) / 10) / 100, value };
}

/** The app's first own layer (the one writing its message file) changed on disk, found through layerdb's cache-id. */
async function tamperAppLayer(images: RebuildImages, root: string): Promise<void> {
  const facts = await imageFacts(images.docker, images.app);
  const k = facts.diffIds.length - 3;
  const chain = chainIds(facts.diffIds)[k]?.replace(/^sha256:/, "") ?? "";
  const cacheId = (await readFile(join(root, "image/overlay2/layerdb/sha256", chain, "cache-id"), "utf8")).trim();
  await writeFile(join(root, "overlay2", cacheId, "diff", APP_MESSAGE_PATH), "tampered on the node\n");
}

async function main(): Promise<void> {
  const eng = await testEngine();
  const work = await mkdtemp(join(tmpdir(), "sl-bench-rebuild-"));
  let registry: TestRegistry | undefined;
  let images: RebuildImages | undefined;
  const made: string[] = [];
  const db = new Level<string, Uint8Array>(join(work, "feeds"), { valueEncoding: "view" });
  try {
    process.stderr.write("building the test images and starting the registry\n");
    images = await buildRebuildImages(eng.docker);
    registry = await startRegistry();
    await db.open();
    const feeds = await FeedManager.open(db, [{ name: "osv", kind: "osv", source: FIXTURE }], silentLogger());
    await feeds.refresh();
    const builder: Builder = { name: "local", docker: eng.docker, limits: defaultLimits(availableParallelism(), totalmem()), localRoot: eng.info.rootDir };
    const srcInv = await rescanImage(builder, (await imageFacts(eng.docker, images.app)).imageId, join(work, "scan"));
    const before = matchInventory(feeds.index, srcInv);
    if (!before.some((m) => m.id === ADVISORY)) throw new Error(`the test image does not match ${ADVISORY}: the bench would measure nothing`);
    const keys = generateSigningKeys();
    const client = new RegistryClient({ host: registry.host, ca: registry.ca, auth: registry.auth });
    const pipeline = new RebuildPipeline({
      strategies: [rebaseStrategy, restoreWith({ recipe: recipeStrategy({ roots: [dirname(images.contextDir)] }) }), recipeStrategy({ roots: [dirname(images.contextDir)] })],
      registry: { client, host: registry.host, repository: "bench/shadows" },
      signingKeyPem: keys.privateKeyPem,
      matches: () => before,
      index: feeds.index,
      baseMap: { [images.baseV1]: images.baseV2 },
      workRoot: join(work, "jobs"),
      log: silentLogger(),
    });
    const appId = (await imageFacts(eng.docker, images.app)).imageId;
    const job = (id: string, strategy: string, reasons = [ADVISORY]): RebuildJob =>
      create(RebuildJobSchema, { id, imageId: appId, image: images?.app ?? "", reasons, strategy, risk: 70, sourceLayer: srcInv.layerIds[1] ?? "" });
    const keep = (s: Shadow) => made.push(s.imageId);

    process.stderr.write("rebase (build, re-scan, push, sign)\n");
    const rebase = await timed(() => pipeline.run(job("bench-rebase-0000000000000000", "rebase"), lease(builder), io));
    keep(rebase.value);

    await tamperAppLayer(images, eng.info.rootDir);
    process.stderr.write("restore (layers verified on disk, the changed one re-made)\n");
    const restore = await timed(() => pipeline.run(job("bench-restore-000000000000000", "restore", ["drift"]), lease(builder), io));
    keep(restore.value);

    // Upstream moved: the base tag now names the fixed build, and the recipe builds FROM it afresh.
    await eng.docker.getImage(images.baseV2).tag({ repo: images.baseV1.split(":")[0] ?? "", tag: images.baseV1.split(":")[1] ?? "" });
    process.stderr.write("recipe (no cache, base as tagged now)\n");
    const recipe = await timed(() => pipeline.run(job("bench-recipe-0000000000000000", "recipe"), lease(builder), io));
    keep(recipe.value);

    process.stderr.write("queue: 10,000 requests\n");
    const queueMs = await measureQueue10k();

    process.stderr.write("served latency with and without a recipe build (interleaved)\n");
    const heavyDir = join(work, "recipes", "heavy");
    await mkdir(heavyDir, { recursive: true });
    // A bounded CPU-bound step (busybox sh arithmetic), long enough to cover one measuring phase.
    await writeFile(join(heavyDir, "Dockerfile"), `FROM ${images.baseV2}\nRUN i=0; while [ $i -lt 4000000 ]; do i=$((i+1)); done; echo done\n`);
    const heavyTag = `shadowlayer-test/bench-heavy:${process.pid}`;
    // The source image names the heavy recipe in its label, as a user's image would.
    const srcDir = join(work, "heavy-src");
    await mkdir(srcDir, { recursive: true });
    await writeFile(join(srcDir, "Dockerfile"), `FROM ${images.baseV2}\nLABEL ${SOURCE_LABELS.recipeContext}="${heavyDir}"\n`);
    const built = await eng.docker.buildImage({ context: srcDir, src: ["Dockerfile"] }, { t: heavyTag, networkmode: "host" });
    await new Promise<void>((resolve, reject) => eng.docker.modem.followProgress(built, (err: Error | null) => (err ? reject(err) : resolve())));
    made.push(heavyTag);
    const heavyFacts = await imageFacts(eng.docker, heavyTag);
    const recipeS = recipeStrategy({ roots: [join(work, "recipes")] });
    const svc = await startForkingService(eng, 600, `sl-bench-served-${process.pid}`);
    let builds = 0;
    /** Rounds whose build was seen running its CPU-bound step before the requests began. */
    let confirmed = 0;
    /** Rounds whose build ended (or failed) before its phase's requests were done: the phase was not all under load. */
    let endedEarly = 0;
    const served = await interleavedP99(svc.port, { rounds: 4, requests: 400, concurrency: 2 }, async () => {
      const ac = new AbortController();
      let started!: () => void;
      const running = new Promise<void>((r) => (started = r));
      const build = recipeS
        .run({
          jobId: `bench-heavy-${builds++}`,
          facts: heavyFacts,
          reasons: [ADVISORY],
          sourceLayer: "",
          vulnerable: [],
          builder,
          labels: {},
          baseMap: {},
          workDir: join(work, `heavy-${builds}`),
          log: (l) => {
            if (/RUN|Running in/.test(l)) started();
          },
          step: (_n, fn) => fn(),
          signal: ac.signal,
        })
        .then((r) => made.push(r.imageId))
        .catch(() => undefined);
      let ended = false;
      void build.finally(() => (ended = true));
      if (await Promise.race([running.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000))])) confirmed++;
      // Let the step's container get going before the phase's requests.
      await new Promise((r) => setTimeout(r, 500));
      return {
        stop: async () => {
          if (ended) endedEarly++;
          ac.abort();
          await build;
        },
      };
    });
    await svc.container.remove({ force: true }).catch(() => undefined);

    const out = {
      rebase_s: rebase.s,
      recipe_s: recipe.s,
      restore_s: restore.s,
      queue_10k_ms: queueMs,
      served_p99_ratio_during_build: served.ratio,
      shadow_added_bytes: Number(rebase.value.addedBytes),
      served_quiet_p99_ms: served.quiet_p99_ms,
      served_build_p99_ms: served.busy_p99_ms,
      served_requests_failed: served.failed,
      served_rounds: served.rounds,
      served_builds_confirmed_running: confirmed,
      served_builds_ended_early: endedEarly,
      rebase_layers_reused: rebase.value.layersReused,
      vulns_before: rebase.value.vulnsBefore,
      vulns_after: rebase.value.vulnsAfter,
      rebase_reference: rebase.value.reference,
      builder_limits: builder.limits,
      engine: eng.info.version,
    };
    console.log(JSON.stringify(out));
  } finally {
    for (const id of made) await eng.docker.getImage(id).remove({ force: true }).catch(() => undefined);
    await images?.cleanup().catch(() => undefined);
    await registry?.close().catch(() => undefined);
    await db.close().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}

await main();
