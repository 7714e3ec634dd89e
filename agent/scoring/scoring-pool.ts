/**
 * A small worker_threads pool for the anomaly model, so training and inference never run on the
 * agent's event loop. Each worker initialises the tfjs backend once and takes one task at a time;
 * scoring goes before training. A worker that dies, or holds a task past its timeout, is replaced
 * and the task it held is sent again (up to `maxAttempts` times in all), and the restart counted.
 */
import { Worker } from "node:worker_threads";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { BackendChoice, BackendName, ModelInput, ModelScope, ScoredWindow } from "../../models/types.js";
import { packInputs, transferList, type TaskRequest, type WorkerReply } from "./pool-messages.js";

export interface ScoringPoolOptions {
  /** Worker threads (default 1). */
  workers?: number;
  backend?: BackendName | "auto";
  log: Logger;
  /** How long one score task may hold a worker (default 10 s). */
  scoreTimeoutMs?: number;
  /** How long one training may hold a worker (default 5 min). */
  trainTimeoutMs?: number;
  /** How long a worker may take to initialise its backend (default 60 s). */
  initTimeoutMs?: number;
  /** Sends of one task before it fails (default 3: the first and two after worker restarts). */
  maxAttempts?: number;
  /** Called at each worker restart (for the metric). */
  onRestart?: (reason: string) => void;
  /** The worker script (default: scoring-worker.js beside this file). */
  script?: URL;
}

/** A model to score with: its key (image id or "generic"), version and artifact text. */
export interface PoolModel {
  key: string;
  version: string;
  artifact: string;
}

export interface TrainRequest {
  key: string;
  scope: ModelScope;
  minWindows: number;
  epochs?: number;
  seed?: number;
}

/** What a training returns: the artifact (JSON text), already held by the worker that trained it. */
export interface Trained {
  version: string;
  artifact: string;
}

/** A task failed in the worker (the model's own error, e.g. too few windows) or ran out of attempts. */
export class PoolTaskError extends ShadowError {
  constructor(
    message: string,
    /** The model's ModelError reason when there is one ("too-few-windows", …). */
    readonly reason?: string,
  ) {
    super(Code.FailedPrecondition, message);
  }
}

interface Task {
  id: number;
  kind: "train" | "score";
  inputs: readonly ModelInput[];
  train?: TrainRequest;
  model?: PoolModel;
  attempts: number;
  /** Send the artifact even to a worker believed to hold the model (after a "missing" reply). */
  forceArtifact: boolean;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Slot {
  index: number;
  worker: Worker;
  ready: boolean;
  task: Task | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Model versions this worker holds, by key. */
  holds: Map<string, string>;
  /** Set once this worker was terminated on purpose (timeout, restart, close). */
  retired: boolean;
}

export class ScoringPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private closed = false;
  private restartCount = 0;
  /** When the latest restarts happened (ms), to slow down a worker that dies as it starts. */
  private readonly restartTimes: number[] = [];
  private chosen: BackendChoice | undefined;
  private readonly script: URL;

  private constructor(private readonly o: ScoringPoolOptions) {
    this.script = o.script ?? new URL("./scoring-worker.js", import.meta.url);
  }

  /** Starts the workers and waits for the first one's backend; rejects when it cannot initialise. */
  static async start(o: ScoringPoolOptions): Promise<ScoringPool> {
    const pool = new ScoringPool(o);
    const n = Math.max(1, Math.floor(o.workers ?? 1));
    const first = new Promise<BackendChoice>((resolve, reject) => {
      for (let i = 0; i < n; i++) pool.spawn(i, i === 0 ? { resolve, reject } : undefined);
    });
    try {
      pool.chosen = await first;
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  /** The backend the workers run (the first worker's). */
  get backend(): BackendChoice | undefined {
    return this.chosen;
  }

  get workers(): number {
    return this.slots.length;
  }

  /** Workers replaced after a death or a timeout since the start. */
  get restarts(): number {
    return this.restartCount;
  }

  /** Tasks waiting for a worker. */
  get queued(): number {
    return this.queue.length;
  }

  train(inputs: readonly ModelInput[], r: TrainRequest): Promise<Trained> {
    return this.submit<Trained>({ kind: "train", inputs, train: r });
  }

  score(model: PoolModel, inputs: readonly ModelInput[]): Promise<ScoredWindow[]> {
    if (inputs.length === 0) return Promise.resolve([]);
    return this.submit<ScoredWindow[]>({ kind: "score", inputs, model });
  }

  /**
   * Terminates worker `index` and starts another in its place; the task it held is sent again.
   * Used when a task outlives its timeout, and by an operator or a test to recover a stuck worker.
   */
  restartWorker(index: number, reason: string): void {
    const s = this.slots[index];
    if (s === undefined || s.retired || this.closed) return;
    s.retired = true;
    this.o.log.warn({ worker: index, reason, task: s.task?.kind }, "anomaly worker restarted");
    void s.worker.terminate();
    this.replace(s, reason);
  }

  /** Stops every worker; queued and running tasks fail. */
  async close(): Promise<void> {
    this.closed = true;
    const err = new PoolTaskError("the scoring pool is closing");
    for (const t of this.queue.splice(0)) t.reject(err);
    await Promise.all(
      this.slots.map(async (s) => {
        s.retired = true;
        if (s.timer) clearTimeout(s.timer);
        s.task?.reject(err);
        s.task = undefined;
        await s.worker.terminate();
      }),
    );
  }

  private submit<T>(t: Omit<Task, "id" | "attempts" | "forceArtifact" | "resolve" | "reject">): Promise<T> {
    if (this.closed) return Promise.reject(new PoolTaskError("the scoring pool is closed"));
    return new Promise<T>((resolve, reject) => {
      this.enqueue({ ...t, id: this.nextId++, attempts: 0, forceArtifact: false, resolve: resolve as (v: unknown) => void, reject }, false);
      this.dispatch();
    });
  }

  /** Scoring goes before training; a re-sent task goes first of its kind. */
  private enqueue(t: Task, front: boolean): void {
    if (front) {
      this.queue.unshift(t);
      return;
    }
    const at = t.kind === "score" ? this.queue.findIndex((q) => q.kind === "train") : -1;
    if (at < 0) this.queue.push(t);
    else this.queue.splice(at, 0, t);
  }

  private spawn(index: number, first?: { resolve: (b: BackendChoice) => void; reject: (e: Error) => void }): Slot {
    const worker = new Worker(this.script, { workerData: { prefer: this.o.backend ?? "auto" } });
    const slot: Slot = { index, worker, ready: false, task: undefined, timer: undefined, holds: new Map(), retired: false };
    this.slots[index] = slot;
    const initTimer = setTimeout(() => {
      const why = `worker ${index} did not initialise its backend in ${this.o.initTimeoutMs ?? 60_000} ms`;
      if (first) first.reject(new ShadowError(Code.Internal, why));
      this.restartWorker(index, why);
    }, this.o.initTimeoutMs ?? 60_000);
    initTimer.unref();
    worker.on("message", (m: WorkerReply) => {
      if (slot.retired) return;
      if (m.type === "ready") {
        clearTimeout(initTimer);
        slot.ready = true;
        this.o.log.info({ worker: index, backend: m.backend.name, reason: m.backend.reason }, "anomaly worker ready");
        first?.resolve(m.backend);
        this.dispatch();
      } else if (m.type === "init-failed") {
        clearTimeout(initTimer);
        this.o.log.error({ worker: index, err: m.error }, "anomaly worker cannot initialise a tfjs backend");
        // The same backend would fail again: this worker is not replaced.
        slot.retired = true;
        void worker.terminate();
        first?.reject(new ShadowError(Code.FailedPrecondition, `no tfjs backend: ${m.error}`));
      } else this.onReply(slot, m);
    });
    worker.on("error", (err) => {
      if (!slot.retired) this.o.log.warn({ worker: index, err: String(err) }, "anomaly worker failed");
    });
    worker.on("exit", (code) => {
      clearTimeout(initTimer);
      if (slot.retired || this.closed) return;
      slot.retired = true;
      first?.reject(new ShadowError(Code.Internal, `worker ${index} exited (code ${code}) before its backend was ready`));
      this.o.log.warn({ worker: index, code, task: slot.task?.kind }, "anomaly worker died; restarting it");
      this.replace(slot, `exited with code ${code}`);
    });
    return slot;
  }

  /** Puts a new worker in a retired one's place and sends its task again (or fails it after the last attempt). */
  private replace(s: Slot, reason: string): void {
    if (s.timer) clearTimeout(s.timer);
    const t = s.task;
    s.task = undefined;
    this.restartCount++;
    this.o.onRestart?.(reason);
    if (t !== undefined) {
      if (t.attempts >= (this.o.maxAttempts ?? 3)) t.reject(new PoolTaskError(`${t.kind} task failed ${t.attempts} times (last: worker ${reason})`));
      else this.enqueue(t, true);
    }
    const now = Date.now();
    this.restartTimes.push(now);
    while ((this.restartTimes[0] ?? now) < now - 60_000) this.restartTimes.shift();
    // More than 5 restarts in a minute: the next one waits 5 s, so a crash loop does not spin.
    const delay = this.restartTimes.length > 5 ? 5000 : 0;
    setTimeout(() => {
      if (!this.closed) this.spawn(s.index);
    }, delay);
  }

  private onReply(s: Slot, m: Exclude<WorkerReply, { type: "ready" | "init-failed" }>): void {
    const t = s.task;
    if (t === undefined || t.id !== m.id) return;
    if (s.timer) clearTimeout(s.timer);
    s.task = undefined;
    switch (m.type) {
      case "trained":
        s.holds.set(m.key, m.version);
        t.resolve({ version: m.version, artifact: m.artifact } satisfies Trained);
        break;
      case "scored":
        if (t.model !== undefined) s.holds.set(t.model.key, t.model.version);
        t.resolve(m.windows);
        break;
      case "missing":
        if (t.model !== undefined) s.holds.delete(t.model.key);
        t.forceArtifact = true;
        t.attempts--;
        this.enqueue(t, true);
        break;
      case "failed":
        if (t.model !== undefined) s.holds.delete(t.model.key);
        t.reject(new PoolTaskError(m.error, m.reason));
        break;
    }
    this.dispatch();
  }

  private dispatch(): void {
    for (const s of this.slots) {
      if (this.queue.length === 0) return;
      if (!s.ready || s.retired || s.task !== undefined) continue;
      const t = this.queue.shift();
      if (t === undefined) return;
      this.send(s, t);
    }
  }

  private send(s: Slot, t: Task): void {
    t.attempts++;
    s.task = t;
    const inputs = packInputs(t.inputs);
    let req: TaskRequest;
    if (t.kind === "train" && t.train !== undefined) {
      const r = t.train;
      req = { type: "train", id: t.id, key: r.key, inputs, scope: r.scope, minWindows: r.minWindows, ...(r.epochs !== undefined ? { epochs: r.epochs } : {}), ...(r.seed !== undefined ? { seed: r.seed } : {}) };
    } else {
      const m = t.model as PoolModel;
      const held = !t.forceArtifact && s.holds.get(m.key) === m.version;
      req = { type: "score", id: t.id, key: m.key, version: m.version, inputs, ...(held ? {} : { artifact: m.artifact }) };
    }
    const timeoutMs = t.kind === "train" ? (this.o.trainTimeoutMs ?? 300_000) : (this.o.scoreTimeoutMs ?? 10_000);
    s.timer = setTimeout(() => this.restartWorker(s.index, `${t.kind} task held past ${timeoutMs} ms`), timeoutMs);
    s.timer.unref();
    s.worker.postMessage(req, transferList(req));
  }
}
