/**
 * The rebuild queue's share of `bench:rebuild` (`queue_10k_ms`): 10,000 rebuild requests (risky
 * containers, two per image, so 5,000 distinct jobs) planned from their scores and graphs,
 * deduped and stored in a real level, with no builder free so that only queueing is measured.
 * Run alone (`node dist/test/bench/rebuild-queue.js`) it prints {"queue_10k_ms":…}.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { create } from "@bufbuild/protobuf";
import { Level } from "level";
import { LayerGraphSchema, LayerKind, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { ContainerScoresSchema, PolicySchema, type ContainerScores } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { silentLogger } from "../../common/log.js";
import { planRebuilds } from "../../aggregator/rebuild/rebuild-plan.js";
import { RebuildScheduler } from "../../aggregator/rebuild/scheduler.js";
import type { BuilderLease, BuilderPoolApi, JobRunner } from "../../aggregator/rebuild/types.js";

const REQUESTS = 10_000;
const PER_IMAGE = 2;
/** Requests of the untimed first round, so that what is timed runs compiled code. */
const WARM_UP = 1_000;

/** A pool with no free slot: every acquire waits until the scheduler closes. */
const busyPool: BuilderPoolApi = {
  acquire: (signal) => new Promise<BuilderLease>((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true })),
  status: () => [],
  close: async () => undefined,
};
const neverRuns: JobRunner = {
  run: () => Promise.reject(new Error("the queue benchmark runs no build")),
};

function requests(n: number): { scores: ContainerScores[]; graphs: LayerGraph[] } {
  const policy = create(PolicySchema, { name: "default", rebuildThreshold: 60, switchThreshold: 85 });
  const scores: ContainerScores[] = [];
  const graphs: LayerGraph[] = [];
  for (let i = 0; i < n; i++) {
    const image = Math.floor(i / PER_IMAGE);
    const containerId = i.toString(16).padStart(64, "0");
    const imageId = `sha256:a${image.toString(16).padStart(63, "0")}`;
    const base = `sha256:b${image.toString(16).padStart(63, "0")}`;
    const app = `sha256:c${image.toString(16).padStart(63, "0")}`;
    graphs.push(
      create(LayerGraphSchema, {
        containerId,
        containerName: `bench-${i}`,
        node: `node-${i % 20}`,
        image: `bench/app-${image}:1`,
        imageId,
        layers: [
          { layerId: base, name: "base", kind: LayerKind.IMAGE, index: 0 },
          { layerId: app, name: "app", kind: LayerKind.IMAGE, index: 1, dependencies: [base] },
          { layerId: `rw:${containerId}`, name: "rw", kind: LayerKind.WRITABLE, dependencies: [app] },
        ],
      }),
    );
    scores.push(
      create(ContainerScoresSchema, {
        containerId,
        containerName: `bench-${i}`,
        node: `node-${i % 20}`,
        policy,
        risk: 70 + (image % 30),
        layers: [
          { layerId: base, layerName: "base", risk: 70 + (image % 30), reasons: [{ kind: "vuln", id: `CVE-2024-${image % 1000}`, value: 0.7 }, { kind: "vuln", id: "CVE-2024-0727", value: 0.6 }] },
          { layerId: app, layerName: "app", risk: 10, reasons: [] },
        ],
      }),
    );
  }
  return { scores, graphs };
}

/** Milliseconds to plan, dedupe and store 10,000 rebuild requests (5,000 jobs), after an untimed round of 1,000. */
export async function measureQueue10k(): Promise<number> {
  await queue(WARM_UP);
  return queue(REQUESTS);
}

async function queue(n: number): Promise<number> {
  const { scores, graphs } = requests(n);
  const dir = await mkdtemp(join(tmpdir(), "sl-bench-queue-"));
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" });
  await db.open();
  const s = await RebuildScheduler.open({ db, pool: busyPool, runner: neverRuns, log: silentLogger(), startupGraceMs: 0 });
  try {
    const t0 = performance.now();
    await s.applyPlan(planRebuilds(scores, graphs));
    const elapsed = performance.now() - t0;
    const jobs = s.all().length;
    if (jobs !== n / PER_IMAGE) throw new Error(`the queue holds ${jobs} jobs, expected ${n / PER_IMAGE}`);
    return Math.round(elapsed * 10) / 10;
  } finally {
    await s.close();
    await db.close();
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  console.log(JSON.stringify({ queue_10k_ms: await measureQueue10k() }));
}
