/**
 * The anomaly model on a node: sits between the telemetry's windows and the spool. Each batch of
 * windows is scored in the worker pool, layer by layer, with the model of the container's image
 * (or, while that image warms up, the node's generic model, flagged `generic`), the alert hygiene
 * of models/alerting.ts (AlertGate: warm-up, persistence, hysteresis, cooldown; models/ANOMALY.md)
 * applied per (container, layer), and `LayerFeatures.anomaly` set; then the batch is handed on, in
 * the order batches came. Scoring is bounded: a batch not scored in time (or when scoring fails)
 * goes on without anomaly, counted and logged. With no model at all a window carries no anomaly.
 *
 * Lifecycle: each image's baseline windows are kept (bounded) from its first window; after the
 * warm-up and at least `minWindows` windows its model is trained in the pool, saved to the model
 * directory and loaded. The generic model is trained once the node has `minWindows` windows of any
 * image. A model deployed by ModelUpdate or placed in the directory replaces either. Models are not
 * retrained on the node: a newer model comes from `shadowlayer train` (ModelUpdate).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandStatus, type ModelUpdate } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AnomalyReasonSchema, AnomalySchema, AnomalyStatusSchema, ModelInfoSchema, type AnomalyStatus, type LayerFeatures, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { Logger } from "../../common/log.js";
import { AlertGate, type AlertPolicy } from "../../models/alerting.js";
import { inputsFromWindow } from "../../models/input.js";
import { MAX_ARTIFACT_BYTES, MIN_TRAINING_WINDOWS, type BackendName, type ModelInput, type ModelScope, type ScoredWindow } from "../../models/types.js";
import type { CommandOutcome } from "../actions/command-handler.js";
import type { AgentMetrics } from "../metrics.js";
import type { Service } from "../service-runner.js";
import { BaselineBuffer } from "./baseline-buffer.js";
import { EventLoopDelay } from "./event-loop-delay.js";
import { GENERIC_KEY, ModelRejected, ModelStore, type LoadedModel } from "./model-store.js";
import { ScoringPool } from "./scoring-pool.js";

export interface AnomalyScorerOptions {
  log: Logger;
  metrics: AgentMetrics;
  /** The image id of a container (from the LDG collector); undefined when not known yet. */
  imageOf: (containerId: string) => string | undefined;
  /** Off: windows pass through unscored and ModelUpdate is refused (default on). */
  enabled?: boolean;
  /** The model directory; without one, models live in memory only. */
  modelDir?: string;
  workers?: number;
  backend?: BackendName | "auto";
  /** An image's warm-up before its own model is trained (default 30 min). */
  warmupMs?: number;
  /** Fewest baseline windows a model is trained on, or loaded with (default 200). */
  minWindows?: number;
  /** How long a batch may wait for its scores before it goes on without them (default 5 s). */
  scoreTimeoutMs?: number;
  /** Alert hygiene (models/alerting.ts; its defaults when absent). */
  alerts?: Partial<AlertPolicy>;
  /** Baseline windows kept per image (default 2,000) and for the generic model (default 4,000). */
  baselinePerImage?: number;
  genericBaseline?: number;
  /**
   * A container's first windows are not kept as baseline (default 3): they hold its start (every
   * process new, its whole history counted at once), not its steady behaviour. They are scored
   * all the same, and the alert gate's warm-up keeps them from alerting.
   */
  startWindows?: number;
  /** Images whose baselines are kept at once; the least recently seen goes first (default 32). */
  maxImages?: number;
  /** Training epochs and seed (the model's defaults when absent). */
  epochs?: number;
  seed?: number;
  /** The model directory's fallback check period (default 5 s). */
  pollMs?: number;
  /** After a failed training, how long before it is tried again (default 5 min). */
  retryMs?: number;
  now?: () => number;
}

/** What the agent's configuration sets (the rest comes from the agent itself). */
export type AnomalySettings = Omit<AnomalyScorerOptions, "log" | "metrics" | "imageOf" | "modelDir" | "now">;

/** Batches waiting to be handed on past which new ones skip scoring (counted as "backlog"). */
const MAX_BACKLOG = 16;
const MAX_REASONS = 5;

interface Pending {
  layer: LayerFeatures;
  input: ModelInput;
  containerId: string;
  stateKey: string;
}

export class AnomalyScorer implements Service {
  readonly name = "anomaly";
  readonly store: ModelStore;
  private pool: ScoringPool | undefined;
  /** Why there is no pool (scoring off, or no backend could start). */
  private unavailable: string;
  private readonly enabled: boolean;
  private readonly loop = new EventLoopDelay();
  private readonly gate: AlertGate;
  /** The alert streams (container/layer) of each container, to forget them with it; and those alerting now. */
  private readonly streams = new Map<string, Set<string>>();
  private readonly alerting = new Set<string>();
  private readonly baselines = new Map<string, BaselineBuffer>();
  private generic: BaselineBuffer | undefined;
  private readonly training = new Set<string>();
  /** Windows seen per container, up to `startWindows` (for the baseline's skip of a start). */
  private readonly started = new Map<string, number>();
  private scored = 0;
  private backlog = 0;
  private tail: Promise<void> = Promise.resolve();
  private starting: Promise<void> | undefined;
  private stopped = false;
  private readonly minWindows: number;
  private readonly now: () => number;

  constructor(private readonly o: AnomalyScorerOptions) {
    this.enabled = o.enabled ?? true;
    this.unavailable = this.enabled ? "no model yet: the anomaly workers start with the first one" : "anomaly scoring is off (--anomaly off)";
    this.gate = new AlertGate(o.alerts);
    this.minWindows = Math.max(1, Math.floor(o.minWindows ?? MIN_TRAINING_WINDOWS));
    this.now = o.now ?? Date.now;
    this.store = new ModelStore({ log: o.log, minWindows: this.minWindows, ...(o.modelDir !== undefined ? { dir: o.modelDir } : {}), ...(o.pollMs !== undefined ? { pollMs: o.pollMs } : {}) });
    this.store.on("rejected", (r) => o.metrics.anomalyModelsRejected.inc({ reason: r.reason }));
    o.metrics.anomalyModelCounts = () => {
      const all = this.store.all();
      return { image: all.filter((m) => m.key !== GENERIC_KEY).length, generic: all.length - all.filter((m) => m.key !== GENERIC_KEY).length };
    };
    o.metrics.eventLoopP99 = () => this.loop.p99Ms() / 1000;
  }

  /**
   * Measures the event loop and loads the model directory. The workers (they load tfjs: seconds of
   * CPU) start with the first model, loaded or due to be trained, so an agent with nothing to score
   * never pays for them; the agent never waits for them, and until they are ready windows go on
   * unscored (their baselines kept). A backend that cannot start leaves the agent running without
   * scores (logged, and in the status's reason).
   */
  async start(): Promise<void> {
    this.loop.start();
    if (!this.enabled) return;
    this.store.on("loaded", () => void this.ready());
    await this.store.start();
    if (this.store.all().length > 0) void this.ready();
  }

  /** Starts the workers if they are not yet, and resolves once they are ready or could not start. */
  ready(): Promise<void> {
    if (!this.enabled || this.stopped) return Promise.resolve();
    this.starting ??= this.startPool();
    return this.starting;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.starting;
    await this.tail;
    await this.store.stop();
    await this.pool?.close();
    this.pool = undefined;
    this.loop.stop();
  }

  private async startPool(): Promise<void> {
    this.unavailable = "the anomaly workers are starting";
    let pool: ScoringPool;
    try {
      pool = await ScoringPool.start({
        log: this.o.log,
        ...(this.o.workers !== undefined ? { workers: this.o.workers } : {}),
        ...(this.o.backend !== undefined ? { backend: this.o.backend } : {}),
        onRestart: () => this.o.metrics.anomalyWorkerRestarts.inc(),
      });
    } catch (err) {
      this.unavailable = `no anomaly workers: ${err instanceof Error ? err.message : String(err)}`;
      this.o.log.error({ err: this.unavailable }, "anomaly scoring unavailable; windows are sent without scores");
      return;
    }
    if (this.stopped) return pool.close();
    this.pool = pool;
    this.unavailable = "";
    const b = pool.backend;
    if (b !== undefined) this.o.metrics.anomalyBackend.set({ backend: b.name }, 1);
    this.o.log.info(
      { backend: b?.name, reason: b?.reason, workers: pool.workers, models: this.store.all().length, modelDir: this.store.dir, warmupMs: this.warmupMs, minWindows: this.minWindows },
      "anomaly scoring on",
    );
  }

  /** The worker pool (undefined while scoring is off or unavailable). */
  get workers(): ScoringPool | undefined {
    return this.pool;
  }

  private get warmupMs(): number {
    return this.o.warmupMs ?? 30 * 60_000;
  }

  /**
   * Scores `batch` and then calls `forward(batch)`; forwards happen in the order of the calls.
   * Never rejects, and never holds a batch longer than the scoring bound.
   */
  process(batch: WindowSummary[], forward: (batch: WindowSummary[]) => void): void {
    const skip = this.backlog >= MAX_BACKLOG;
    if (skip) this.o.metrics.anomalyUnscored.inc({ reason: "backlog" });
    this.backlog++;
    const scored = skip ? Promise.resolve() : this.score(batch);
    this.tail = this.tail
      .then(() => scored)
      .then(() => forward(batch))
      .catch((err: unknown) => this.o.log.warn({ err: String(err) }, "cannot hand on a window batch"))
      .finally(() => this.backlog--);
  }

  /** Sets `anomaly` on the layers of `batch` that a model can score; bounded, never rejects. */
  async score(batch: readonly WindowSummary[]): Promise<void> {
    if (!this.enabled) return;
    const pool = this.pool;
    const groups = new Map<string, { model: LoadedModel; items: Pending[] }>();
    for (const w of batch) {
      const image = this.o.imageOf(w.containerId);
      let inputs: ReturnType<typeof inputsFromWindow>;
      try {
        inputs = inputsFromWindow(w);
      } catch (err) {
        this.o.log.warn({ container: w.containerName || w.containerId, err: String(err) }, "window not scored: its features do not decode");
        continue;
      }
      const layers = new Map(w.layers.map((l) => [l.layerId, l]));
      const seen = this.started.get(w.containerId) ?? 0;
      const steady = seen >= (this.o.startWindows ?? 3);
      if (!steady) this.started.set(w.containerId, seen + 1);
      for (const x of inputs) {
        const layer = layers.get(x.layerId);
        if (layer === undefined) continue;
        // A window without a usable length is scored (the model masks its per-second columns) but not kept.
        if (steady && x.input.seconds > 0 && Number.isFinite(x.input.seconds)) this.remember(image, x.input);
        if (pool === undefined) continue;
        const model = (image !== undefined ? this.store.get(image) : undefined) ?? this.store.get(GENERIC_KEY);
        if (model === undefined) continue;
        const g = groups.get(model.key) ?? { model, items: [] };
        g.items.push({ layer, input: x.input, containerId: w.containerId, stateKey: `${w.containerId}/${x.layerId}` });
        groups.set(model.key, g);
      }
    }
    if (pool === undefined) {
      // Enough baseline for the generic model (every image's windows are in it): time for the workers.
      if ((this.generic?.size ?? 0) >= this.minWindows) void this.ready();
      return;
    }
    this.maybeTrain(pool);
    if (groups.size === 0) return;
    let late = false;
    let timer: NodeJS.Timeout | undefined;
    const bound = this.o.scoreTimeoutMs ?? 5000;
    const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), bound)));
    // One model failing (in its worker) leaves the other models' scores in place.
    const work = Promise.all(
      [...groups.values()].map(async ({ model, items }) => {
        try {
          const out = await pool.score({ key: model.key, version: model.manifest.version, artifact: model.artifact }, items.map((i) => i.input));
          if (!late) this.apply(model, items, out);
        } catch (err) {
          if (late) return;
          this.o.metrics.anomalyUnscored.inc({ reason: "error" });
          this.o.log.warn({ model: model.key, version: model.manifest.version, layerWindows: items.length, err: String(err) }, "anomaly scoring failed; these windows are sent without scores");
        }
      }),
    );
    try {
      if ((await Promise.race([work, timeout])) === "timeout") {
        late = true;
        this.o.metrics.anomalyUnscored.inc({ reason: "timeout" });
        this.o.log.warn({ windows: batch.length, boundMs: bound, queued: pool.queued }, "anomaly scoring took too long; windows sent without scores");
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** A container went away: its layers' alert states go too. */
  forget(containerId: string): void {
    this.started.delete(containerId);
    for (const k of this.streams.get(containerId) ?? []) {
      this.gate.forget(k);
      this.alerting.delete(k);
    }
    this.streams.delete(containerId);
    this.o.metrics.anomalyAlerting.set(this.alerting.size);
  }

  /** The model version in use for an image (its own, else the generic one), if any. */
  modelFor(imageId: string | undefined): LoadedModel | undefined {
    return (imageId !== undefined ? this.store.get(imageId) : undefined) ?? this.store.get(GENERIC_KEY);
  }

  status(): AnomalyStatus {
    const b = this.pool?.backend;
    return create(AnomalyStatusSchema, {
      enabled: this.enabled,
      backend: b?.name ?? "",
      backendReason: b?.reason ?? this.unavailable,
      models: this.store.all().map((m) =>
        create(ModelInfoSchema, {
          scope: m.manifest.scope.kind,
          scopeId: m.manifest.scope.kind === "image" ? m.manifest.scope.imageId : "",
          version: m.manifest.version,
          featureVersion: m.manifest.featureVersion,
          trainingWindows: BigInt(Math.max(0, Math.floor(m.manifest.trainingWindows))),
          ...(Number.isFinite(Date.parse(m.manifest.createdAt)) ? { created: timestampFromDate(new Date(m.manifest.createdAt)) } : {}),
          origin: m.origin,
          backend: m.manifest.backend,
        }),
      ),
      windowsScored: BigInt(this.scored),
      workerRestarts: BigInt(this.pool?.restarts ?? 0),
      eventLoopP99Ms: this.loop.p99Ms(),
      modelsRejected: BigInt(this.store.rejected),
      lastRejection: this.store.lastRejection,
    });
  }

  /** The ModelUpdate command: validated, stored in the model directory and loaded, or rejected. */
  async modelUpdate(a: ModelUpdate): Promise<CommandOutcome> {
    if (!this.enabled) return { status: CommandStatus.REJECTED, message: this.unavailable };
    const key = a.imageId === "" ? GENERIC_KEY : a.imageId;
    if (a.artifact.byteLength > MAX_ARTIFACT_BYTES) {
      return { status: CommandStatus.REJECTED, message: `artifact of ${a.artifact.byteLength} bytes is over the ${MAX_ARTIFACT_BYTES}-byte limit` };
    }
    try {
      const m = await this.store.install(a.artifact, key, "deployed", a.version === "" ? undefined : a.version);
      return { status: CommandStatus.OK, message: `loaded model ${m.manifest.version} for ${key} (${m.manifest.trainingWindows} training windows, trained on ${m.manifest.backend})` };
    } catch (err) {
      if (!(err instanceof ModelRejected)) throw err;
      const inUse = this.modelFor(key === GENERIC_KEY ? undefined : key);
      return {
        status: CommandStatus.REJECTED,
        message: `model rejected (${err.rejection.reason}): ${err.message}; in use: ${inUse === undefined ? "no model" : `${inUse.key} ${inUse.manifest.version}`}`,
      };
    }
  }

  private apply(model: LoadedModel, items: readonly Pending[], out: readonly ScoredWindow[]): void {
    const generic = model.key === GENERIC_KEY;
    let scored = 0;
    items.forEach((it, i) => {
      const r = out[i];
      if (r === undefined || !Number.isFinite(r.score)) return;
      const score = Math.min(100, Math.max(0, r.score));
      const state = this.gate.update(it.stateKey, score);
      let keys = this.streams.get(it.containerId);
      if (keys === undefined) this.streams.set(it.containerId, (keys = new Set()));
      keys.add(it.stateKey);
      if (state.alerting) this.alerting.add(it.stateKey);
      else this.alerting.delete(it.stateKey);
      it.layer.anomaly = create(AnomalySchema, {
        score,
        reasons: r.reasons.slice(0, MAX_REASONS).map((x) =>
          create(AnomalyReasonSchema, { feature: x.feature.slice(0, 100), sigma: finite(x.sigma), contribution: finite(x.contribution), value: finite(x.value), baseline: finite(x.baseline) }),
        ),
        modelVersion: model.manifest.version,
        generic,
        alerting: state.alerting,
        maskedFeatures: Math.max(0, Math.floor(r.masked)),
        error: finite(r.error),
      });
      scored++;
    });
    this.scored += scored;
    this.o.metrics.anomalyWindowsScored.inc({ model: generic ? "generic" : "image" }, scored);
    this.o.metrics.anomalyAlerting.set(this.alerting.size);
  }

  /** Keeps a window as baseline for its image (until the image has a model) and for the generic model. */
  private remember(image: string | undefined, x: ModelInput): void {
    if (image !== undefined && this.store.get(image) === undefined) {
      let b = this.baselines.get(image);
      if (b === undefined) {
        b = new BaselineBuffer(this.o.baselinePerImage ?? 2000, this.now());
        for (const k of this.baselines.keys()) {
          if (this.baselines.size < (this.o.maxImages ?? 32)) break;
          if (!this.training.has(k)) this.baselines.delete(k);
        }
      } else this.baselines.delete(image);
      // Re-inserted: the map's order is least recently seen first.
      this.baselines.set(image, b);
      b.push(x);
    }
    if (this.store.get(GENERIC_KEY) === undefined) {
      this.generic ??= new BaselineBuffer(this.o.genericBaseline ?? 4000, this.now());
      this.generic.push(x);
    }
  }

  private maybeTrain(pool: ScoringPool): void {
    const now = this.now();
    for (const [image, b] of this.baselines) {
      if (this.store.get(image) !== undefined) {
        this.baselines.delete(image);
        continue;
      }
      if (this.training.has(image) || now < b.retryAt || now - b.firstSeen < this.warmupMs || b.size < this.minWindows) continue;
      this.train(pool, image, { kind: "image", imageId: image }, b);
    }
    const g = this.generic;
    if (g !== undefined && this.store.get(GENERIC_KEY) === undefined && !this.training.has(GENERIC_KEY) && now >= g.retryAt && g.size >= this.minWindows) {
      this.train(pool, GENERIC_KEY, { kind: "generic" }, g);
    }
  }

  private train(pool: ScoringPool, key: string, scope: ModelScope, b: BaselineBuffer): void {
    this.training.add(key);
    const inputs = b.inputs();
    const started = this.now();
    const kind = scope.kind;
    this.o.log.info({ model: key, windows: inputs.length }, "training an anomaly model");
    pool
      .train(inputs, { key, scope, minWindows: this.minWindows, ...(this.o.epochs !== undefined ? { epochs: this.o.epochs } : {}), ...(this.o.seed !== undefined ? { seed: this.o.seed } : {}) })
      .then((t) => this.store.install(t.artifact, key, "trained"))
      .then(
        (m) => {
          this.o.metrics.anomalyTrainings.inc({ scope: kind, result: "ok" });
          this.o.log.info({ model: key, version: m.manifest.version, windows: inputs.length, seconds: (this.now() - started) / 1000 }, "anomaly model trained");
          if (key === GENERIC_KEY) this.generic = undefined;
          else this.baselines.delete(key);
        },
        (err: unknown) => {
          this.o.metrics.anomalyTrainings.inc({ scope: kind, result: "failed" });
          b.retryAt = this.now() + (this.o.retryMs ?? 5 * 60_000);
          this.o.log.warn({ model: key, windows: inputs.length, err: err instanceof Error ? err.message : String(err) }, "anomaly model training failed; tried again later");
        },
      )
      .finally(() => this.training.delete(key));
  }
}

const finite = (v: number) => (Number.isFinite(v) ? v : 0);
