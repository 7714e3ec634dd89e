/**
 * The rebuild stage assembled: the builder pool, the registry (or the local engine), the
 * strategies, the pipeline that runs a job, the scheduler that plans and queues them from the
 * scores, the dispatch that gets ready shadows prepared on the nodes, and garbage collection.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Level } from "level";
import { RebuildState } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { generateSigningKeys } from "../../common/cosign.js";
import { tlsFiles } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { writePrivateFile } from "../../common/private-files.js";
import { parseRegistryRef, readRegistryAuth, RegistryClient } from "../../common/registry-client.js";
import type { FeedManager } from "../feeds/manager.js";
import type { AgentIngest } from "../ingest/agent-service.js";
import type { ScoreEngine } from "../risk/score-engine.js";
import type { GraphStore } from "../store/graph-store.js";
import { parseBuilderFlags } from "./builder-config.js";
import { startBuilderPool, type BuilderPool } from "./builder-pool.js";
import { RebuildPipeline, type ShadowRegistry } from "./pipeline.js";
import type { RebuildOptions } from "./rebuild-options.js";
import { RebuildScheduler } from "./scheduler.js";
import { ShadowDispatch } from "./shadow-dispatch.js";
import { ShadowGc } from "./shadow-gc.js";
import { patchStrategy } from "./strategies/patch.js";
import { rebaseStrategy } from "./strategies/rebase.js";
import { recipeStrategy } from "./strategies/recipe.js";
import { restoreWith } from "./strategies/restore.js";
import { registryCopyFor } from "./registry-layers.js";
import type { Strategy } from "./types.js";

export interface RebuildStage {
  scheduler: RebuildScheduler;
  pool: BuilderPool;
  pipeline: RebuildPipeline;
  dispatch: ShadowDispatch;
  gc: ShadowGc;
  stop(): Promise<void>;
}

export interface RebuildStageDeps {
  db: Level<string, Uint8Array>;
  dataDir: string;
  graphs: GraphStore;
  scores: ScoreEngine;
  feeds: FeedManager;
  ingest: AgentIngest;
  log: Logger;
}

/**
 * The signing key: --signing-key (or cosign.key in the TLS directory, which the configuration
 * names unless --insecure), else, without TLS, one made once in the data dir.
 */
async function signingKey(o: RebuildOptions, d: RebuildStageDeps): Promise<string> {
  const path = o.signingKey ?? join(d.dataDir, "signing", tlsFiles.signingKey);
  if (!existsSync(path)) {
    if (o.signingKey !== undefined) {
      throw new ShadowError(Code.FailedPrecondition, `no signing key at ${path}: run \`shadowlayer certs init\` (it makes cosign.key and cosign.pub, keeping what exists) or pass --signing-key`);
    }
    await mkdir(join(d.dataDir, "signing"), { recursive: true, mode: 0o700 });
    const k = generateSigningKeys();
    await writePrivateFile(path, k.privateKeyPem);
    await writePrivateFile(join(d.dataDir, "signing", tlsFiles.signingPub), k.publicKeyPem);
    d.log.warn({ path }, "no TLS directory (--insecure): made a signing key in the data dir; agents need its cosign.pub");
  }
  return readFile(path, "utf8");
}

async function registryOf(o: RebuildOptions): Promise<ShadowRegistry | undefined> {
  if (o.registry === undefined) return undefined;
  const { host, repository } = parseRegistryRef(o.registry);
  const client = new RegistryClient({
    host,
    ...(o.registryCa !== undefined ? { ca: await readFile(o.registryCa) } : {}),
    ...(o.registryAuth !== undefined ? { auth: await readRegistryAuth(o.registryAuth) } : {}),
  });
  return { client, host, repository };
}

export async function startRebuildStage(o: RebuildOptions, d: RebuildStageDeps): Promise<RebuildStage> {
  const log = d.log.child({ component: "rebuild" });
  const key = await signingKey(o, d);
  const registry = await registryOf(o);
  if (registry !== undefined) {
    // A registry that is down or refuses the credentials is reported, not fatal: jobs retry.
    await registry.client.ping().catch((err: unknown) => log.warn({ registry: registry.host, err: String(err) }, "registry not usable yet; pushes will retry"));
  }
  const pool = startBuilderPool({ builders: parseBuilderFlags(o.builders, o.dockerSocket), log });
  const recipe = recipeStrategy({ roots: o.recipeRoots });
  // Restore re-makes tampered layers from the registry's copy of the source, else through the recipe strategy (its roots apply).
  const restore = restoreWith({ recipe, ...(registry !== undefined ? { registryFor: registryCopyFor(registry.client, registry.host) } : {}) });
  const strategies: Strategy[] = [rebaseStrategy, restore, recipe, patchStrategy];
  const workRoot = join(d.dataDir, "rebuild-work");
  await mkdir(workRoot, { recursive: true, mode: 0o700 });
  const pipeline = new RebuildPipeline({
    strategies,
    ...(registry !== undefined ? { registry } : {}),
    signingKeyPem: key,
    matches: (id) => d.scores.matches(id)?.matches ?? [],
    index: d.feeds.index,
    baseMap: o.baseMap,
    ...(o.packageMirror !== undefined ? { packageMirror: o.packageMirror } : {}),
    workRoot,
    log,
  });
  const scheduler = await RebuildScheduler.open({
    db: d.db,
    pool,
    runner: pipeline,
    log,
    ...(o.enabled ? { scores: d.scores, graphs: d.graphs } : {}),
    destination: pipeline.destination(),
  });
  const dispatch = new ShadowDispatch(scheduler, d.graphs, d.ingest, log);
  dispatch.start();
  const gc = new ShadowGc(scheduler, { keep: o.keep, ...(registry !== undefined ? { registry } : {}), engines: (name) => pool.docker(name), log });
  // A round when a job turns ready (not on each later note about it, such as a node's preparation).
  const ready = new Set<string>();
  scheduler.on("upsert", (j) => {
    if (j.state !== RebuildState.READY) ready.delete(j.id);
    else if (!ready.has(j.id)) {
      ready.add(j.id);
      void gc.collect();
    }
  });
  scheduler.on("delete", (id) => ready.delete(id));
  return {
    scheduler,
    pool,
    pipeline,
    dispatch,
    gc,
    async stop() {
      dispatch.stop();
      await scheduler.close();
      await pool.close();
    },
  };
}
