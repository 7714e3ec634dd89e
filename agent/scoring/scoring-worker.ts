/**
 * One scoring worker thread: initialises the tfjs backend once, then trains models and scores
 * batches for the pool (scoring-pool.ts). Models it trained or was sent are kept by key (an image,
 * or "generic"), one version each, so a batch usually travels without its model.
 */
import { parentPort, workerData } from "node:worker_threads";
import { serializeArtifact } from "../../models/artifact.js";
import { initBackend } from "../../models/backend.js";
import { AnomalyModel } from "../../models/model.js";
import { trainModel } from "../../models/train.js";
import { unpackInputs, type TaskRequest, type WorkerInit, type WorkerReply } from "./pool-messages.js";

/** Models kept per worker; the oldest goes first (a node runs far fewer images than this). */
const MAX_MODELS = 256;

const port = parentPort;
if (port === null) throw new Error("scoring-worker.js runs only as a worker thread");
const reply = (r: WorkerReply) => port.postMessage(r);
const models = new Map<string, AnomalyModel>();

function keep(key: string, m: AnomalyModel): void {
  models.get(key)?.dispose();
  models.delete(key);
  models.set(key, m);
  for (const [k, old] of models) {
    if (models.size <= MAX_MODELS) break;
    old.dispose();
    models.delete(k);
  }
}

async function handle(t: TaskRequest): Promise<void> {
  const inputs = unpackInputs(t.inputs);
  if (t.type === "train") {
    const m = await trainModel(inputs, {
      scope: t.scope,
      minWindows: t.minWindows,
      ...(t.epochs !== undefined ? { epochs: t.epochs } : {}),
      ...(t.seed !== undefined ? { seed: t.seed } : {}),
    });
    keep(t.key, m);
    reply({ type: "trained", id: t.id, key: t.key, version: m.manifest.version, artifact: serializeArtifact(m.toArtifact()) });
    return;
  }
  let m = models.get(t.key);
  if (m === undefined || m.manifest.version !== t.version) {
    if (t.artifact === undefined) return reply({ type: "missing", id: t.id });
    m = AnomalyModel.fromArtifact(t.artifact, { minWindows: 1 });
    keep(t.key, m);
  }
  reply({ type: "scored", id: t.id, windows: m.score(inputs) });
}

const init = workerData as WorkerInit;
try {
  const backend = await initBackend(init.prefer);
  reply({ type: "ready", backend });
  // One task at a time: the pool sends the next only after this one's reply.
  port.on("message", (t: TaskRequest) => {
    handle(t).catch((err: unknown) => {
      const reason = typeof err === "object" && err !== null && "reason" in err ? String((err as { reason: unknown }).reason) : undefined;
      reply({ type: "failed", id: t.id, error: err instanceof Error ? err.message : String(err), ...(reason !== undefined ? { reason } : {}) });
    });
  });
} catch (err) {
  reply({ type: "init-failed", error: err instanceof Error ? err.message : String(err) });
}
