/**
 * Which rebuild job runs, when and where. Jobs come from the plan (rebuild-plan.ts, re-run when
 * scores or graphs change) and from operators (force, rerun); they wait in level (job-store.ts)
 * ordered by risk, then age, and each is handed to a builder slot of the pool and to the runner.
 *
 * - A failure keeps the build's log tail and is retried with backoff, on another builder when
 *   there is one; meanwhile the queue goes on. After `maxAttempts` the job is FAILED.
 * - A builder lost mid-build (the lease's `lost`) is not the job's failure: it is queued again,
 *   avoiding that builder.
 * - Jobs found RUNNING at open (the aggregator stopped mid-build) are queued again.
 * - A queued job that the plan no longer asks for (its reasons changed or went away: a feed
 *   changed, a policy was raised, the containers went away) is cancelled, and a running one is
 *   stopped once one of its reasons is gone, unless an operator forced it.
 * - A READY shadow supersedes the image's older READY ones.
 */
import { EventEmitter } from "node:events";
import { clone, create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Level } from "level";
import { RebuildJobSchema, RebuildState, RebuildStepSchema, ShadowSchema, type BuilderStatus, type RebuildJob, type Shadow, type ShadowPreparation } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { Backoff } from "../../common/backoff.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { ScoreEngine } from "../risk/score-engine.js";
import type { GraphStore } from "../store/graph-store.js";
import { jobIdOf } from "./job-key.js";
import { JobStore } from "./job-store.js";
import { ANOMALY_REASON, MAX_PLAN_CONTAINERS, planRebuilds, type PlannedRebuild } from "./rebuild-plan.js";
import type { BuilderLease, BuilderPoolApi, JobRunner, StrategyName } from "./types.js";

export const DEFAULT_MAX_ATTEMPTS = 5;
export const DEFAULT_MAX_JOBS = 10_000;
/** The log tail a job keeps: enough to see why a build failed, small enough for every job. */
export const LOG_TAIL_LINES = 64;
export const LOG_TAIL_BYTES = 16 * 1024;
/** Where shadows go when no registry is configured (the embedded default). */
export const LOCAL_DESTINATION = "local engine (no registry configured)";
/** The error of a job an operator cancelled: the plan does not bring it back. */
export const CANCELLED_BY_OPERATOR = "cancelled by an operator";
/** The strategy reason of a strategy an operator chose (ForceRebuild): kept across attempts and reruns. */
export const STRATEGY_BY_OPERATOR = "chosen by an operator";
/** The reason of a job forced for an image that nothing planned. */
export const FORCED_REASON = "forced";
export const STRATEGIES: readonly StrategyName[] = ["rebase", "recipe", "restore", "patch"];

/** Lower-case state names, as ListRebuilds counts them and the CLI shows them. */
export function stateName(s: RebuildState): string {
  return (RebuildState[s] ?? "unspecified").toLowerCase();
}

const FINISHED: ReadonlySet<RebuildState> = new Set([RebuildState.READY, RebuildState.FAILED, RebuildState.CANCELLED, RebuildState.SUPERSEDED]);

export interface RebuildSchedulerEvents {
  /** A job was made or changed (a copy). */
  upsert: [RebuildJob];
  /** A job was pruned. */
  delete: [string];
}

export interface RebuildSchedulerOptions {
  db: Level<string, Uint8Array>;
  pool: BuilderPoolApi;
  runner: JobRunner;
  log: Logger;
  /** The plan's inputs; without scores, jobs come only from applyPlan() and operators. */
  scores?: Pick<ScoreEngine, "all" | "on" | "off">;
  /** Which containers run which image (the plan, and images named in ForceRebuild). */
  graphs?: Pick<GraphStore, "all" | "on" | "off">;
  /** Where shadows go, as ListRebuilds says it (default LOCAL_DESTINATION). */
  destination?: string;
  /** Builds per job before it is FAILED (default 5). */
  maxAttempts?: number;
  /** Backoff between attempts (default 30 s doubling up to 30 min, with jitter). */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Jobs kept (default 10,000); the oldest finished go first. */
  maxJobs?: number;
  /** Scores change in bursts: the plan is made again this long after the first change (default 200 ms). */
  planDelayMs?: number;
  /**
   * After open, reasons are not judged gone for this long (default 60 s): feeds load and agents
   * reconnect first, and a queue should not be cancelled by a plan made from half the facts.
   */
  startupGraceMs?: number;
}

/** The last lines of a build's log, at most LOG_TAIL_LINES and LOG_TAIL_BYTES. */
class LogTail {
  private readonly lines: string[] = [];
  private bytes = 0;

  push(line: string): void {
    const l = line.length > LOG_TAIL_BYTES / 4 ? `${line.slice(0, LOG_TAIL_BYTES / 4)}…` : line;
    this.lines.push(l);
    this.bytes += Buffer.byteLength(l);
    while (this.lines.length > LOG_TAIL_LINES || this.bytes > LOG_TAIL_BYTES) this.bytes -= Buffer.byteLength(this.lines.shift() ?? "");
  }

  get(): string[] {
    return [...this.lines];
  }
}

type StopCause = "cancel" | "lost" | "close";

interface Running {
  ac: AbortController;
  lease: BuilderLease;
  cause?: StopCause;
  done: Promise<void>;
}

const ms = (t: Timestamp | undefined): number => (t === undefined ? 0 : timestampDate(t).getTime());

export class RebuildScheduler extends EventEmitter<RebuildSchedulerEvents> {
  private readonly running = new Map<string, Running>();
  /** Builders a job should not get again (the one it failed on or lost). */
  private readonly avoid = new Map<string, string[]>();
  /** Forced jobs, in the order they were forced: ahead of the queue and of their backoff. */
  private readonly urgent = new Map<string, number>();
  private urgentSeq = 0;
  /** The last plan, by image id (ForceRebuild of an image takes its reasons). */
  private planned = new Map<string, PlannedRebuild>();
  private closed = false;
  private readonly closing = new AbortController();
  private wake: (() => void) | undefined;
  private planTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private judgeFrom: number;
  private loop: Promise<void> = Promise.resolve();
  private unsubscribe: () => void = () => undefined;
  private readonly maxAttempts: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private readonly maxJobs: number;
  private readonly planDelayMs: number;
  readonly destination: string;
  readonly log: Logger;

  private constructor(
    private readonly store: JobStore,
    private readonly o: RebuildSchedulerOptions,
  ) {
    super();
    this.setMaxListeners(0);
    this.log = o.log.child({ component: "rebuild-scheduler" });
    this.maxAttempts = Math.max(1, o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
    this.retryMinMs = o.retryMinMs ?? 30_000;
    this.retryMaxMs = Math.max(this.retryMinMs, o.retryMaxMs ?? 30 * 60_000);
    this.maxJobs = Math.max(1, o.maxJobs ?? DEFAULT_MAX_JOBS);
    this.planDelayMs = o.planDelayMs ?? 200;
    this.destination = o.destination ?? LOCAL_DESTINATION;
    this.judgeFrom = Date.now() + (o.startupGraceMs ?? 60_000);
  }

  /** Opens the queue in `db` (jobs left RUNNING are queued again) and starts dispatching. */
  static async open(o: RebuildSchedulerOptions): Promise<RebuildScheduler> {
    const store = await JobStore.open(o.db);
    const s = new RebuildScheduler(store, o);
    const interrupted = [...store.all()].filter((j) => j.state === RebuildState.RUNNING);
    const now = new Date();
    for (const j of interrupted) {
      j.state = RebuildState.QUEUED;
      j.error = "the aggregator stopped during this build; queued again";
      endRunningSteps(j, now, "failed");
      j.updatedAt = timestampFromDate(now);
    }
    await store.write(interrupted);
    if (interrupted.length > 0) s.log.info({ jobs: interrupted.length }, "rebuild jobs interrupted by a stop are queued again");
    s.subscribe();
    s.loop = s.dispatch();
    return s;
  }

  private subscribe(): void {
    const { scores, graphs } = this.o;
    if (scores === undefined) return;
    const soon = () => this.planSoon();
    scores.on("upsert", soon);
    scores.on("delete", soon);
    graphs?.on("upsert", soon);
    graphs?.on("delete", soon);
    this.unsubscribe = () => {
      scores.off("upsert", soon);
      scores.off("delete", soon);
      graphs?.off("upsert", soon);
      graphs?.off("delete", soon);
    };
    this.replan();
    const grace = this.judgeFrom - Date.now();
    if (grace > 0) {
      // Once the grace is over, what the plan no longer asks for is judged even if nothing changes.
      this.graceTimer = setTimeout(() => this.replan(), grace);
      this.graceTimer.unref();
    }
  }

  private planSoon(): void {
    if (this.planTimer !== undefined || this.closed) return;
    this.planTimer = setTimeout(() => {
      this.planTimer = undefined;
      this.replan();
    }, this.planDelayMs);
    this.planTimer.unref();
  }

  private replan(): void {
    if (this.closed || this.o.scores === undefined) return;
    void this.applyPlan(planRebuilds(this.o.scores.all(), this.o.graphs?.all() ?? [])).catch((err: unknown) => this.log.error({ err }, "cannot store the rebuild plan"));
  }

  // ---- the plan ----

  /**
   * Takes a plan: new (image, reasons) become QUEUED jobs, known ones get the plan's risk and
   * containers, a job the plan cancelled comes back when it is planned again; what the plan no
   * longer asks for is cancelled (see the file's comment). Plans of the same id are one job.
   */
  async applyPlan(plans: readonly PlannedRebuild[]): Promise<void> {
    if (this.closed) return;
    const now = new Date();
    const stamp = timestampFromDate(now);
    const merged = new Map<string, PlannedRebuild>();
    for (const p of plans) {
      const m = merged.get(p.id);
      if (m === undefined) merged.set(p.id, p);
      else if (p.risk > m.risk) merged.set(p.id, { ...p, containers: union(m.containers, p.containers, MAX_PLAN_CONTAINERS), nodes: union(m.nodes, p.nodes) });
      else merged.set(p.id, { ...m, containers: union(m.containers, p.containers, MAX_PLAN_CONTAINERS), nodes: union(m.nodes, p.nodes) });
    }
    const reasonsOfImage = new Map<string, Set<string>>();
    const byImage = new Map<string, PlannedRebuild>();
    for (const p of merged.values()) {
      let rs = reasonsOfImage.get(p.imageId);
      if (rs === undefined) reasonsOfImage.set(p.imageId, (rs = new Set()));
      for (const r of p.reasons) rs.add(r);
      const b = byImage.get(p.imageId);
      if (b === undefined || p.risk > b.risk) byImage.set(p.imageId, p);
    }
    this.planned = byImage;

    const put: RebuildJob[] = [];
    const created: RebuildJob[] = [];
    for (const p of merged.values()) {
      const j = this.store.get(p.id);
      if (j === undefined) {
        created.push(newJob(p, stamp));
        continue;
      }
      let touched = refresh(j, p);
      if (j.state === RebuildState.CANCELLED && j.error !== CANCELLED_BY_OPERATOR) {
        reset(j);
        touched = true;
      }
      if (touched) {
        j.updatedAt = stamp;
        put.push(j);
      }
    }
    if (Date.now() >= this.judgeFrom) {
      for (const j of this.store.all()) {
        if (j.forced || merged.has(j.id)) continue;
        const now2 = reasonsOfImage.get(j.imageId);
        const why =
          now2 === undefined
            ? "its reasons went away: no layer of the image is past its policy's rebuild threshold now"
            : `its reasons changed: the image is now planned for ${[...now2].sort().join(", ")}`;
        if (j.state === RebuildState.QUEUED) {
          this.cancelJob(j, why, now);
          put.push(j);
        } else if (j.state === RebuildState.RUNNING && (now2 === undefined || j.reasons.some((r) => !now2.has(r)))) {
          this.cancelJob(j, why, now);
          put.push(j);
        }
      }
    }
    const { keep, drop } = this.bound(created);
    if (keep.length > 0) this.log.info({ jobs: keep.length }, "rebuild jobs planned");
    await this.save([...put, ...keep], drop);
    this.poke();
  }

  /**
   * Makes room for `created` under maxJobs: the oldest finished jobs go (READY ones last); if
   * active jobs alone fill the store, the least risky new ones are not kept.
   */
  private bound(created: RebuildJob[]): { keep: RebuildJob[]; drop: string[] } {
    let excess = this.store.size + created.length - this.maxJobs;
    if (excess <= 0) return { keep: created, drop: [] };
    const finished = [...this.store.all()].filter((j) => FINISHED.has(j.state) && !this.running.has(j.id));
    finished.sort((a, b) => Number(a.state === RebuildState.READY) - Number(b.state === RebuildState.READY) || ms(a.updatedAt) - ms(b.updatedAt));
    const drop = finished.slice(0, excess).map((j) => j.id);
    excess -= drop.length;
    if (excess <= 0) return { keep: created, drop };
    const keep = [...created].sort((a, b) => b.risk - a.risk).slice(0, Math.max(0, created.length - excess));
    this.log.warn({ refused: created.length - keep.length, maxJobs: this.maxJobs }, "the rebuild queue is full of active jobs: the least risky new plans are not kept");
    return { keep, drop };
  }

  // ---- dispatching ----

  private poke(): void {
    this.wake?.();
  }

  /** Waits until poked, the next backoff ends, or `capMs`. */
  private idle(capMs = Infinity): Promise<void> {
    return new Promise((resolve) => {
      let t: NodeJS.Timeout | undefined;
      const done = () => {
        if (t !== undefined) clearTimeout(t);
        if (this.wake === done) this.wake = undefined;
        resolve();
      };
      const wait = Math.min(capMs, this.nextBackoffEnd() - Date.now());
      if (Number.isFinite(wait)) {
        t = setTimeout(done, Math.max(0, wait));
        t.unref();
      }
      this.wake = done;
      if (this.closed) done();
    });
  }

  private nextBackoffEnd(): number {
    let next = Infinity;
    for (const j of this.store.all()) if (j.state === RebuildState.QUEUED && j.nextAttemptAt !== undefined) next = Math.min(next, ms(j.nextAttemptAt));
    return next;
  }

  private runnable(j: RebuildJob, now: number): boolean {
    if (j.state !== RebuildState.QUEUED || this.running.has(j.id) || this.store.get(j.id) !== j) return false;
    return j.nextAttemptAt === undefined || ms(j.nextAttemptAt) <= now || this.urgent.has(j.id);
  }

  /** Whether `a` goes before `b`: forced first (in the order forced), then risk, then age. */
  private before(a: RebuildJob, b: RebuildJob): boolean {
    const ua = this.urgent.get(a.id);
    const ub = this.urgent.get(b.id);
    if (ua !== ub) return ub === undefined || (ua !== undefined && ua < ub);
    if (a.risk !== b.risk) return a.risk > b.risk;
    const ca = ms(a.createdAt);
    const cb = ms(b.createdAt);
    if (ca !== cb) return ca < cb;
    return a.id < b.id;
  }

  /** The next job to run (on `builder`, skipping jobs that avoid it). */
  private pick(builder?: string): RebuildJob | undefined {
    const now = Date.now();
    let best: RebuildJob | undefined;
    for (const j of this.store.all()) {
      if (!this.runnable(j, now)) continue;
      if (builder !== undefined && this.avoid.get(j.id)?.includes(builder) === true) continue;
      if (best === undefined || this.before(j, best)) best = j;
    }
    return best;
  }

  /**
   * One slot at a time: the next job's slot is asked for, and once a builder is free the best job
   * at that moment takes it (a riskier job planned meanwhile goes first).
   */
  private async dispatch(): Promise<void> {
    while (!this.closed) {
      const job = this.pick();
      if (job === undefined) {
        await this.idle();
        continue;
      }
      let lease: BuilderLease;
      try {
        lease = await this.o.pool.acquire(this.closing.signal, this.avoid.get(job.id) ?? []);
      } catch (err) {
        if (this.closed) return;
        this.log.warn({ err, job: job.id }, "no builder slot; trying again");
        await this.idle(1000);
        continue;
      }
      if (this.closed) {
        lease.release();
        return;
      }
      const chosen = this.pick(lease.builder.name) ?? (this.runnable(job, Date.now()) ? job : undefined);
      if (chosen === undefined) {
        lease.release();
        continue;
      }
      this.start(chosen, lease);
    }
  }

  private start(job: RebuildJob, lease: BuilderLease): void {
    const r: Running = { ac: new AbortController(), lease, done: Promise.resolve() };
    this.running.set(job.id, r);
    this.urgent.delete(job.id);
    const onLost = () => {
      r.cause ??= "lost";
      r.ac.abort(lease.lost.reason);
    };
    const now = new Date();
    job.state = RebuildState.RUNNING;
    job.builder = lease.builder.name;
    job.attempts += 1;
    job.steps = [];
    job.progress = 0;
    job.error = "";
    job.logTail = [];
    job.nextAttemptAt = undefined;
    if (!byOperator(job)) {
      job.strategy = "";
      job.strategyReason = "";
    }
    job.updatedAt = timestampFromDate(now);
    this.saveSoon(job);
    this.log.info({ job: job.id, image: job.image, builder: job.builder, attempt: job.attempts }, "rebuild started");
    if (lease.lost.aborted) onLost();
    else lease.lost.addEventListener("abort", onLost, { once: true });
    r.done = this.run(job, r)
      // Only storing the outcome can fail here (the store is failing): the job stays as level last had it.
      .catch((err: unknown) => this.log.error({ err, job: job.id }, "cannot store a rebuild job's outcome"))
      .finally(() => {
        lease.lost.removeEventListener("abort", onLost);
        lease.release();
        this.running.delete(job.id);
        this.poke();
      });
  }

  private async run(job: RebuildJob, r: Running): Promise<void> {
    const tail = new LogTail();
    // What the reasons' names do not say (an anomaly's feature) opens every attempt's log.
    for (const n of this.planned.get(job.imageId)?.notes ?? []) if (job.reasons.includes(ANOMALY_REASON)) tail.push(`planned for ${n}`);
    const current = () => !this.closed && r.cause !== "cancel" && this.store.get(job.id) === job && job.state === RebuildState.RUNNING;
    let shadow: Shadow | undefined;
    let failure: unknown;
    try {
      shadow = await this.o.runner.run(clone(RebuildJobSchema, job), r.lease, {
        signal: r.ac.signal,
        update: (patch) => {
          if (!current()) return;
          if (patch.steps !== undefined) job.steps = patch.steps.map((s) => clone(RebuildStepSchema, s));
          if (patch.progress !== undefined) job.progress = Math.max(0, Math.min(100, Math.round(patch.progress)));
          if (patch.strategy !== undefined) job.strategy = patch.strategy;
          // An operator's choice stays marked as such (retries and reruns keep it), with the runner's words after it.
          if (patch.strategyReason !== undefined) job.strategyReason = byOperator(job) && !patch.strategyReason.startsWith(STRATEGY_BY_OPERATOR) ? `${STRATEGY_BY_OPERATOR}: ${patch.strategyReason}` : patch.strategyReason;
          job.logTail = tail.get();
          job.updatedAt = timestampFromDate(new Date());
          this.saveSoon(job);
        },
        log: (line) => tail.push(line),
      });
    } catch (err) {
      failure = err;
    }
    // Cancelled (the job says so already), pruned, or stopping (left RUNNING: queued again at the next open).
    if (!current()) return;
    const now = new Date();
    job.logTail = tail.get();
    job.updatedAt = timestampFromDate(now);
    if (failure === undefined && shadow !== undefined) {
      await this.ready(job, shadow, now);
      return;
    }
    endRunningSteps(job, now, "failed");
    this.avoid.set(job.id, [job.builder]);
    if (r.cause === "lost") {
      // The builder's fault, not the build's: the attempt does not count.
      job.attempts = Math.max(0, job.attempts - 1);
      job.state = RebuildState.QUEUED;
      job.error = `builder ${job.builder} went away during the build (${reasonText(r.lease.lost.reason)}); queued for another builder`;
      this.log.warn({ job: job.id, builder: job.builder }, "builder lost mid-build; job queued again");
    } else {
      job.error = failure === undefined ? "the runner returned no shadow" : ShadowError.from(failure, Code.BuildFailed).message;
      if (job.attempts >= this.maxAttempts) {
        job.state = RebuildState.FAILED;
        this.log.warn({ job: job.id, image: job.image, attempts: job.attempts, error: job.error }, "rebuild failed; no attempts left");
      } else {
        job.state = RebuildState.QUEUED;
        job.nextAttemptAt = timestampFromMs(now.getTime() + this.retryDelay(job.attempts));
        this.log.warn({ job: job.id, image: job.image, attempts: job.attempts, error: job.error }, "rebuild failed; retried after a backoff");
      }
    }
    await this.save([job]);
  }

  private retryDelay(attempts: number): number {
    const b = new Backoff(this.retryMinMs, this.retryMaxMs);
    let d = this.retryMinMs;
    for (let i = 0; i < attempts; i++) d = b.next();
    return d;
  }

  private async ready(job: RebuildJob, shadow: Shadow, now: Date): Promise<void> {
    job.state = RebuildState.READY;
    job.shadow = shadow;
    job.progress = 100;
    job.error = "";
    this.avoid.delete(job.id);
    const changed = [job];
    for (const other of this.store.all()) {
      if (other === job || other.imageId !== job.imageId || other.state !== RebuildState.READY) continue;
      other.state = RebuildState.SUPERSEDED;
      other.error = `superseded by job ${job.id}`;
      other.updatedAt = timestampFromDate(now);
      changed.push(other);
    }
    this.log.info({ job: job.id, image: job.image, shadow: shadow.reference, superseded: changed.length - 1 }, "shadow ready");
    await this.save(changed);
  }

  // ---- storing and announcing ----

  private async save(put: readonly RebuildJob[], drop: readonly string[] = []): Promise<void> {
    const p = this.store.write(put, drop);
    if (this.listenerCount("upsert") > 0) for (const j of put) this.emit("upsert", clone(RebuildJobSchema, j));
    for (const id of drop) this.emit("delete", id);
    await p;
  }

  /** Saves in the background (a build's progress); a failed write is logged, the next one carries the state. */
  private saveSoon(job: RebuildJob): void {
    this.save([job]).catch((err: unknown) => this.log.error({ err, job: job.id }, "cannot store a rebuild job"));
  }

  private cancelJob(job: RebuildJob, why: string, now: Date): void {
    job.state = RebuildState.CANCELLED;
    job.error = why;
    job.nextAttemptAt = undefined;
    job.updatedAt = timestampFromDate(now);
    endRunningSteps(job, now, "failed");
    this.urgent.delete(job.id);
    const r = this.running.get(job.id);
    if (r !== undefined) {
      r.cause = "cancel";
      r.ac.abort(new ShadowError(Code.Cancelled, why));
    }
    this.log.info({ job: job.id, image: job.image, why }, "rebuild cancelled");
  }

  // ---- what the API reads and operators do ----

  get(id: string): RebuildJob | undefined {
    return this.store.get(id);
  }

  all(): RebuildJob[] {
    return [...this.store.all()];
  }

  /** Hears every change (`upsert`, `delete`) until the returned function is called. */
  follow(upsert: (j: RebuildJob) => void, remove: (id: string) => void): () => void {
    this.on("upsert", upsert);
    this.on("delete", remove);
    return () => {
      this.off("upsert", upsert);
      this.off("delete", remove);
    };
  }

  /** Stores a node's answer to PrepareShadow with the job (one entry per node and container). */
  async notePreparation(jobId: string, p: ShadowPreparation): Promise<void> {
    const j = this.store.get(jobId);
    if (j === undefined) return;
    const i = j.preparations.findIndex((x) => x.node === p.node && x.containerId === p.containerId);
    if (i >= 0) j.preparations[i] = p;
    else j.preparations.push(p);
    if (j.preparations.length > MAX_PLAN_CONTAINERS) j.preparations.splice(0, j.preparations.length - MAX_PLAN_CONTAINERS);
    j.updatedAt = timestampFromDate(new Date());
    await this.save([j]);
  }

  /** Marks a job's shadow as deleted by garbage collection: its reference cleared, `note` at the end of its log tail. */
  async noteCollected(jobId: string, note: string): Promise<void> {
    const j = this.store.get(jobId);
    if (j?.shadow === undefined) return;
    j.shadow = { ...clone(ShadowSchema, j.shadow), reference: "" };
    const tail = new LogTail();
    for (const l of [...j.logTail, note]) tail.push(l);
    j.logTail = tail.get();
    j.updatedAt = timestampFromDate(new Date());
    await this.save([j]);
  }

  builders(): BuilderStatus[] {
    return this.o.pool.status();
  }

  /** Jobs per state name (queued, running, ready, failed, cancelled, superseded). */
  counts(): Record<string, number> {
    const c: Record<string, number> = { queued: 0, running: 0, ready: 0, failed: 0, cancelled: 0, superseded: 0 };
    for (const j of this.store.all()) {
      const n = stateName(j.state);
      c[n] = (c[n] ?? 0) + 1;
    }
    return c;
  }

  /** A job by id or unique prefix: NOT_FOUND when none, INVALID_ARGUMENT when the prefix is ambiguous. */
  find(ref: string): RebuildJob {
    if (ref === "") throw new ShadowError(Code.InvalidArgument, "a job id (or a unique prefix of one) is required");
    const exact = this.store.get(ref);
    if (exact !== undefined) return exact;
    const hits: RebuildJob[] = [];
    for (const j of this.store.all()) if (j.id.startsWith(ref)) hits.push(j);
    if (hits.length === 0) throw new ShadowError(Code.NotFound, `no rebuild job ${ref}`);
    if (hits.length > 1)
      throw new ShadowError(Code.InvalidArgument, `job prefix ${ref} is ambiguous: ${hits.length} jobs match (${hits.slice(0, 5).map((j) => j.id).join(", ")}${hits.length > 5 ? ", …" : ""})`);
    return hits[0] as RebuildJob;
  }

  /** Cancels a queued or running job (a running build is stopped); the job as the cancel left it. */
  async cancel(ref: string): Promise<RebuildJob> {
    const j = this.find(ref);
    if (j.state !== RebuildState.QUEUED && j.state !== RebuildState.RUNNING) throw new ShadowError(Code.FailedPrecondition, `job ${j.id} is ${stateName(j.state)}: only a queued or running job can be cancelled`);
    this.cancelJob(j, CANCELLED_BY_OPERATOR, new Date());
    const answer = clone(RebuildJobSchema, j);
    await this.save([j]);
    return answer;
  }

  /** Runs a finished, failed or cancelled job again from the start (an operator's: kept whatever the plan says). */
  async rerun(ref: string): Promise<RebuildJob> {
    const j = this.find(ref);
    if (!FINISHED.has(j.state)) throw new ShadowError(Code.FailedPrecondition, `job ${j.id} is ${stateName(j.state)} already`);
    reset(j);
    j.forced = true;
    j.updatedAt = timestampFromDate(new Date());
    const answer = clone(RebuildJobSchema, j);
    await this.save([j]);
    this.poke();
    return answer;
  }

  /**
   * Runs a job now, ahead of the queue and of its backoff (a finished one from the start), or
   * plans one for an image (its planned reasons, else "forced"); `strategy` overrides the choice.
   */
  async force(req: { job?: string; image?: string; strategy?: string }): Promise<RebuildJob> {
    const strategy = req.strategy ?? "";
    if (strategy !== "" && !(STRATEGIES as readonly string[]).includes(strategy)) throw new ShadowError(Code.InvalidArgument, `strategy: expected one of ${STRATEGIES.join(", ")}, got ${strategy}`);
    if ((req.job ?? "") !== "" && (req.image ?? "") !== "") throw new ShadowError(Code.InvalidArgument, "name a job or an image, not both");
    let j: RebuildJob;
    if ((req.job ?? "") !== "") j = this.find(req.job ?? "");
    else if ((req.image ?? "") !== "") j = this.jobForImage(req.image ?? "");
    else throw new ShadowError(Code.InvalidArgument, "a job (id or prefix) or an image (id or name) is required");
    if (j.state === RebuildState.RUNNING) {
      if (strategy !== "" && strategy !== j.strategy) throw new ShadowError(Code.FailedPrecondition, `job ${j.id} is running with ${j.strategy || "a strategy not chosen yet"}; cancel it first to force ${strategy}`);
      j.forced = true;
    } else {
      if (FINISHED.has(j.state)) reset(j);
      j.forced = true;
      j.nextAttemptAt = undefined;
      this.urgent.set(j.id, ++this.urgentSeq);
    }
    if (strategy !== "" && j.state !== RebuildState.RUNNING) {
      j.strategy = strategy;
      j.strategyReason = STRATEGY_BY_OPERATOR;
    }
    j.updatedAt = timestampFromDate(new Date());
    const { keep } = this.store.get(j.id) === undefined ? this.bound([j]) : { keep: [j] };
    if (keep.length === 0) throw new ShadowError(Code.FailedPrecondition, `the rebuild queue holds ${this.maxJobs} active jobs; cancel some first`);
    const answer = clone(RebuildJobSchema, j);
    await this.save(keep);
    this.poke();
    return answer;
  }

  /** The job the plan has (or would have) for an image named by id, id prefix or name. */
  private jobForImage(ref: string): RebuildJob {
    const imageId = this.resolveImage(ref);
    const p = this.planned.get(imageId);
    const reasons = p?.reasons ?? [FORCED_REASON];
    const id = jobIdOf(imageId, reasons);
    const known = this.store.get(id);
    if (known !== undefined) return known;
    if (p !== undefined) return newJob(p, timestampFromDate(new Date()));
    const graphs = (this.o.graphs?.all() ?? []).filter((g) => g.imageId === imageId);
    const fromJob = [...this.store.all()].find((j) => j.imageId === imageId);
    const image = graphs.map((g) => g.image).filter((n) => n !== "").sort()[0] ?? fromJob?.image ?? imageId;
    return newJob(
      {
        id,
        imageId,
        image,
        reasons,
        risk: 0,
        sourceLayer: "",
        sourceLayerName: "",
        containers: graphs.map((g) => g.containerId).sort().slice(0, MAX_PLAN_CONTAINERS),
        nodes: [...new Set(graphs.map((g) => g.node).filter((n) => n !== ""))].sort(),
      },
      timestampFromDate(new Date()),
    );
  }

  /** An image id from an id, a hex prefix of one (4+ digits) or a name, among running containers and jobs. */
  resolveImage(ref: string): string {
    const known = new Map<string, Set<string>>();
    const note = (id: string, name: string) => {
      if (id === "") return;
      let s = known.get(id);
      if (s === undefined) known.set(id, (s = new Set()));
      if (name !== "") s.add(name);
    };
    for (const g of this.o.graphs?.all() ?? []) note(g.imageId, g.image);
    for (const j of this.store.all()) note(j.imageId, j.image);
    if (known.has(ref)) return ref;
    if (known.has(`sha256:${ref}`)) return `sha256:${ref}`;
    const byName = [...known].filter(([, names]) => names.has(ref)).map(([id]) => id);
    const hex = ref.replace(/^sha256:/, "");
    const hits = byName.length > 0 ? byName : /^[0-9a-f]{4,64}$/.test(hex) ? [...known.keys()].filter((id) => id.replace(/^sha256:/, "").startsWith(hex)) : [];
    if (hits.length === 0) throw new ShadowError(Code.NotFound, `no image ${ref} among the containers and rebuild jobs`);
    if (hits.length > 1) throw new ShadowError(Code.InvalidArgument, `image ${ref} is ambiguous: ${hits.length} images match (${hits.slice(0, 5).join(", ")})`);
    return hits[0] as string;
  }

  /** Stops dispatching; running builds are stopped and stay RUNNING in level, to be queued again at the next open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    clearTimeout(this.planTimer);
    clearTimeout(this.graceTimer);
    this.closing.abort(new ShadowError(Code.Cancelled, "the aggregator is stopping"));
    for (const r of this.running.values()) {
      r.cause ??= "close";
      r.ac.abort(new ShadowError(Code.Cancelled, "the aggregator is stopping"));
    }
    this.poke();
    const settled = Promise.allSettled([this.loop, ...[...this.running.values()].map((r) => r.done)]);
    await Promise.race([settled, new Promise((r) => setTimeout(r, 5000).unref())]);
    await this.store.idle();
  }
}

/** `ts` may be shared by many jobs: timestamps are replaced, never changed in place. */
function newJob(p: PlannedRebuild, ts: Timestamp): RebuildJob {
  return create(RebuildJobSchema, {
    id: p.id,
    imageId: p.imageId,
    image: p.image,
    sourceLayer: p.sourceLayer,
    sourceLayerName: p.sourceLayerName,
    reasons: p.reasons,
    risk: p.risk,
    state: RebuildState.QUEUED,
    containers: p.containers,
    nodes: p.nodes,
    logTail: (p.notes ?? []).map((n) => `planned for ${n}`),
    createdAt: ts,
    updatedAt: ts,
  });
}

/** Brings a known job up to the plan (risk, containers, names); whether anything changed. */
function refresh(j: RebuildJob, p: PlannedRebuild): boolean {
  let touched = false;
  if (j.risk !== p.risk) {
    j.risk = p.risk;
    touched = true;
  }
  if (!sameList(j.containers, p.containers)) {
    j.containers = p.containers;
    touched = true;
  }
  if (!sameList(j.nodes, p.nodes)) {
    j.nodes = p.nodes;
    touched = true;
  }
  if (j.image !== p.image || j.sourceLayer !== p.sourceLayer || j.sourceLayerName !== p.sourceLayerName) {
    j.image = p.image;
    j.sourceLayer = p.sourceLayer;
    j.sourceLayerName = p.sourceLayerName;
    touched = true;
  }
  return touched;
}

/** A job as new: queued, nothing tried, nothing built (an operator's strategy stays). */
function reset(j: RebuildJob): void {
  j.state = RebuildState.QUEUED;
  j.attempts = 0;
  j.steps = [];
  j.progress = 0;
  j.error = "";
  j.logTail = [];
  j.nextAttemptAt = undefined;
  j.shadow = undefined;
  j.preparations = [];
  j.builder = "";
  if (!byOperator(j)) {
    j.strategy = "";
    j.strategyReason = "";
  }
}

/** Whether an operator chose the job's strategy (ForceRebuild with a strategy). */
function byOperator(j: RebuildJob): boolean {
  return j.strategy !== "" && j.strategyReason.startsWith(STRATEGY_BY_OPERATOR);
}

function endRunningSteps(j: RebuildJob, now: Date, state: "failed"): void {
  for (const s of j.steps) {
    if (s.state !== "running") continue;
    s.state = state;
    if (s.startedAt !== undefined) s.durationMs = now.getTime() - ms(s.startedAt);
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function union(a: readonly string[], b: readonly string[], max = Infinity): string[] {
  return [...new Set([...a, ...b])].sort().slice(0, max);
}

function reasonText(reason: unknown): string {
  return reason instanceof Error ? reason.message : reason === undefined ? "health check failed" : String(reason);
}
