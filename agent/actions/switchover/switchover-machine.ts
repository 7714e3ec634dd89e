/**
 * The switchover/rollback state machine (SWITCHOVER.md has the steps of each mode and the
 * recovery rules). Every step is written to the record store before it acts and again when it is
 * done, and every step is idempotent (a start of a running container, a stop of a stopped one, a
 * swap to the same backend change nothing), so a recovery may run any step again.
 */
import { clone, create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type Docker from "dockerode";
import { CommandStatus, RollbackSchema, type Rollback, type Switchover } from "../../../proto/gen/shadowlayer/v1/agent_pb.js";
import {
  DataMode,
  SwitchoverKind,
  SwitchoverOutcome,
  SwitchoverRecordSchema,
  SwitchoverStepSchema,
  SwitchoverTrigger,
  type SwitchoverRecord,
  type SwitchoverStep,
} from "../../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { isEngineNotFound } from "../../../common/engine.js";
import { Code, ShadowError } from "../../../common/errors.js";
import type { Logger } from "../../../common/log.js";
import type { CommandOutcome } from "../command-handler.js";
import { SHADOW_CONTAINER_LABELS, ShadowContainers } from "../shadow-containers.js";
import type { Backend, TrafficRedirect } from "../traffic/traffic-redirect.js";
import { withEngineRetry } from "./engine-retry.js";
import { healthGate } from "./health-gate.js";
import { chooseMode, managedService, serviceBackend, type ManagedService } from "./managed-service.js";
import { isFinished, type SwitchoverRecords } from "./switchover-records.js";

/** Labels on a snapshot image (the stopped original's writable layer, committed). */
export const SNAPSHOT_LABELS = {
  of: "shadowlayer.snapshot-of",
  at: "shadowlayer.snapshot.at",
  reason: "shadowlayer.snapshot.reason",
  /** The switchover that made it: a commit run again finds it instead of committing twice. */
  switchover: "shadowlayer.snapshot.switchover",
} as const;

/**
 * TEST-ONLY: when this environment variable names a step, the process SIGKILLs itself right after
 * that step is recorded done (the crash tests restart it and check recovery). Unset: nothing.
 */
export const KILL_AFTER_STEP_ENV = "SHADOWLAYER_TEST_KILL_AFTER_STEP";

export interface SwitchoverBounds {
  /** Health gate deadline (default 10 s). */
  healthTimeoutMs: number;
  /** Drain deadline for connections in flight (default 10 s). */
  drainTimeoutMs: number;
  /** Observation window after the redirect (default 30 s). */
  observeMs: number;
}

export const DEFAULT_SWITCHOVER_BOUNDS: SwitchoverBounds = { healthTimeoutMs: 10_000, drainTimeoutMs: 10_000, observeMs: 30_000 };

export interface SwitchoverMachineOptions {
  docker: Docker;
  proxy: TrafficRedirect;
  records: SwitchoverRecords;
  node: string;
  log: Logger;
  bounds?: Partial<SwitchoverBounds>;
  /** How long a step retries while the engine is unreachable before it fails (default 60 s). */
  engineRetryMs?: number;
  /** A container without a service or health check must stay running this long (default 1 s). */
  settleMs?: number;
  /** Called with each record that reaches an outcome (metrics). */
  onFinished?: (r: SwitchoverRecord) => void;
}

/** What one switchover or rollback works on; rebuilt from the record after a restart. */
interface Run {
  rec: SwitchoverRecord;
  original: Docker.ContainerInspectInfo;
  shadowId: string;
  service: ManagedService | undefined;
  originalBackend: Backend | undefined;
  shadowBackend: Backend | undefined;
  receivedAt: number;
  bounds: SwitchoverBounds;
}

const SWITCH_STEPS: Record<"shared" | "exclusive", readonly string[]> = {
  shared: ["snapshot", "start-shadow", "health-gate", "redirect", "drain", "stop-original", "commit"],
  exclusive: ["snapshot", "hold", "drain", "stop-original", "start-shadow", "health-gate", "redirect", "commit"],
};
const ROLLBACK_STEPS: Record<"shared" | "exclusive", readonly string[]> = {
  shared: ["start-original", "health-gate", "redirect", "drain-shadow", "stop-shadow"],
  exclusive: ["hold", "drain-shadow", "stop-shadow", "start-original", "health-gate", "redirect"],
};
/** Undoing a switchover that never moved traffic (failed, or interrupted before the redirect). */
const UNDO_STEPS = ["stop-shadow", "start-original", "health-gate-original", "redirect-back"] as const;

const modeName = (m: DataMode) => (m === DataMode.EXCLUSIVE ? "exclusive" : "shared");
const message = (err: unknown) => (err instanceof Error ? err.message : String(err));
const statusOf = (err: unknown) => (typeof err === "object" && err !== null && "statusCode" in err ? (err as { statusCode: unknown }).statusCode : undefined);

export class SwitchoverMachine {
  private readonly shadows: ShadowContainers;
  /** Containers (originals) and service addresses a switchover or rollback is working on now. */
  private readonly busy = new Set<string>();
  /** Observations under way, by switchover id. */
  private readonly observing = new Map<string, AbortController>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly bounds: SwitchoverBounds;
  private readonly engineRetryMs: number;
  private stopped = false;

  constructor(private readonly o: SwitchoverMachineOptions) {
    this.shadows = new ShadowContainers(o.docker, o.log);
    this.bounds = { ...DEFAULT_SWITCHOVER_BOUNDS, ...o.bounds };
    this.engineRetryMs = o.engineRetryMs ?? 60_000;
  }

  /** Whether a switchover or rollback is working on this container or service address now. */
  isBusy(key: string): boolean {
    return this.busy.has(key);
  }

  async switchover(a: Switchover, id: string, receivedAt = Date.now()): Promise<CommandOutcome> {
    const original = await this.inspect(a.containerId);
    if (original === undefined) return refused(id, SwitchoverKind.SWITCHOVER, a.containerId, `no container ${JSON.stringify(a.containerId.slice(0, 100))} on this node`);
    const taken = this.claim(original);
    if (taken !== undefined) return refused(id, SwitchoverKind.SWITCHOVER, original.Id, taken);
    try {
      const shadow = await this.pickShadow(original, a.shadowContainerId);
      if (typeof shadow === "string") return refused(id, SwitchoverKind.SWITCHOVER, original.Id, shadow);
      const service = managedService(original.Config.Labels);
      const mode = chooseMode(a.mode, original);
      const rec = create(SwitchoverRecordSchema, {
        id,
        kind: SwitchoverKind.SWITCHOVER,
        node: this.o.node,
        containerId: original.Id,
        containerName: original.Name.replace(/^\//, ""),
        shadowContainerId: shadow.Id,
        shadowContainerName: shadow.Name.replace(/^\//, ""),
        shadowImage: a.shadowImage || (shadow.Config.Labels?.[SHADOW_CONTAINER_LABELS.shadowImage] ?? shadow.Image),
        jobId: a.jobId || (shadow.Config.Labels?.[SHADOW_CONTAINER_LABELS.job] ?? ""),
        trigger: a.trigger === SwitchoverTrigger.UNSPECIFIED ? (a.proactive ? SwitchoverTrigger.PROACTIVE : SwitchoverTrigger.MANUAL) : a.trigger,
        reason: a.reason,
        mode,
        outcome: SwitchoverOutcome.RUNNING,
        requestedAt: timestampNow(),
        updatedAt: timestampNow(),
        serviceAddress: service?.address ?? "",
      });
      const run = this.runOf(rec, original, shadow, receivedAt, {
        healthTimeoutMs: a.healthTimeoutMs || this.bounds.healthTimeoutMs,
        drainTimeoutMs: a.drainTimeoutMs || this.bounds.drainTimeoutMs,
        observeMs: a.observeMs || this.bounds.observeMs,
      });
      await this.o.records.put(rec, original);
      this.o.log.info({ switchover: id, container: original.Id, shadow: shadow.Id, mode: modeName(mode), service: service?.address }, "switchover started");
      await this.forward(run);
      return outcomeOf(run.rec);
    } finally {
      this.release(original);
    }
  }

  async rollback(a: Rollback, id: string, receivedAt = Date.now()): Promise<CommandOutcome> {
    const sw = this.undoable(a.containerId, a.switchoverId);
    if (typeof sw === "string") return refused(id, SwitchoverKind.ROLLBACK, a.containerId, sw);
    const original = this.o.records.original(sw.id) ?? (await this.inspect(sw.containerId));
    if (original === undefined) return refused(id, SwitchoverKind.ROLLBACK, sw.containerId, `no inspect data kept for the original of switchover ${sw.id}`);
    const taken = this.claim(original);
    if (taken !== undefined) return refused(id, SwitchoverKind.ROLLBACK, sw.containerId, taken);
    try {
      this.observing.get(sw.id)?.abort();
      const shadow = await this.inspect(sw.shadowContainerId);
      const rec = create(SwitchoverRecordSchema, {
        id,
        kind: SwitchoverKind.ROLLBACK,
        node: this.o.node,
        containerId: sw.containerId,
        containerName: sw.containerName,
        shadowContainerId: sw.shadowContainerId,
        shadowContainerName: sw.shadowContainerName,
        shadowImage: sw.shadowImage,
        jobId: sw.jobId,
        trigger: a.trigger === SwitchoverTrigger.UNSPECIFIED ? SwitchoverTrigger.MANUAL : a.trigger,
        reason: a.reason,
        mode: sw.mode,
        outcome: SwitchoverOutcome.RUNNING,
        requestedAt: timestampNow(),
        updatedAt: timestampNow(),
        serviceAddress: sw.serviceAddress,
        snapshotImage: a.snapshotId || sw.snapshotImage,
        rollbackOf: sw.id,
      });
      const run = this.runOf(rec, original, shadow, receivedAt, this.bounds);
      await this.o.records.put(rec, original);
      await this.back(run, sw);
      return outcomeOf(run.rec);
    } finally {
      this.release(original);
    }
  }

  /**
   * After a restart: finishes every record an earlier run left unfinished. A switchover whose
   * traffic had moved (redirect done) completes forward; one that had not is rolled back; a
   * rollback is completed. Returns the records as finished (or observing again).
   */
  async recover(): Promise<SwitchoverRecord[]> {
    const out: SwitchoverRecord[] = [];
    for (const rec of this.o.records.unfinished()) {
      for (const s of rec.steps) {
        if (s.state === "running") {
          s.state = "failed";
          s.message = "interrupted: the agent stopped during this step";
        }
      }
      const original = this.o.records.original(rec.id) ?? (await this.inspect(rec.containerId));
      const shadow = await this.inspect(rec.shadowContainerId);
      if (original === undefined) {
        rec.outcome = SwitchoverOutcome.FAILED;
        rec.recovery = "not finished: neither the original's inspect data nor the container was found";
        await this.finish(rec);
        out.push(rec);
        continue;
      }
      const run = this.runOf(rec, original, shadow, Date.now(), this.bounds);
      this.claim(original);
      try {
        const moved = rec.outcome === SwitchoverOutcome.OBSERVING || done(rec, "redirect");
        const last = [...rec.steps].reverse().find((s) => s.state === "done")?.name ?? "none";
        if (rec.kind === SwitchoverKind.ROLLBACK) {
          rec.recovery = `completed the rollback after a restart (last step done: ${last})`;
          const sw = this.o.records.get(rec.rollbackOf);
          await this.back(run, sw);
        } else if (moved) {
          rec.recovery = `completed forward after a restart: traffic was already on the shadow (last step done: ${last})`;
          await this.forward(run);
        } else {
          rec.recovery = `rolled back after a restart: traffic had not moved to the shadow (last step done: ${last})`;
          await this.undo(run, new ShadowError(Code.Internal, "the agent stopped mid-switchover"), SwitchoverTrigger.RECOVERY);
        }
      } catch (err) {
        rec.outcome = SwitchoverOutcome.FAILED;
        rec.error ||= message(err);
        await this.finish(rec);
      } finally {
        this.release(original);
      }
      this.o.log.warn({ switchover: rec.id, container: rec.containerId, outcome: SwitchoverOutcome[rec.outcome], recovery: rec.recovery }, "interrupted switchover recovered");
      out.push(rec);
    }
    return out;
  }

  /** Stops observing (records stay OBSERVING: the next start's recovery observes again). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const c of this.observing.values()) c.abort();
    await Promise.allSettled([...this.background]);
  }

  // ---- the forward path ----------------------------------------------------------------------

  private async forward(run: Run): Promise<void> {
    const steps = SWITCH_STEPS[modeName(run.rec.mode)];
    for (const name of steps) {
      const moved = done(run.rec, "redirect");
      try {
        await this.step(run, name, () => this.act(run, name));
      } catch (err) {
        if (!moved && name !== "commit") {
          await this.undo(run, err, SwitchoverTrigger.AUTOMATIC);
          return;
        }
        // Traffic is on the shadow: a later step that fails is reported, the switchover stands.
        run.rec.error = `${name}: ${message(err)}`;
      }
    }
    run.rec.outcome = SwitchoverOutcome.OBSERVING;
    await this.save(run);
    this.observe(run);
  }

  /** One step of a switchover or rollback; returns what the record's step says. */
  private async act(run: Run, name: string): Promise<string> {
    const d = this.o.docker;
    const addr = run.service?.address;
    switch (name) {
      case "snapshot":
        return `inspect data of ${run.rec.containerName} kept`;
      case "hold":
        if (addr === undefined) return "skipped: no managed service";
        await this.o.proxy.ensure(addr, addr, run.originalBackend);
        this.o.proxy.hold(addr);
        return `new connections to ${addr} held`;
      case "drain":
      case "drain-shadow": {
        const from = name === "drain" ? run.originalBackend : run.shadowBackend;
        if (addr === undefined || from === undefined) return "skipped: no managed service";
        const r = await this.o.proxy.drain(addr, from.id, run.bounds.drainTimeoutMs);
        run.rec.connectionsDrained += r.drained;
        run.rec.connectionsCut += r.cut;
        return `${r.drained} drained, ${r.cut} cut in ${r.waitedMs} ms`;
      }
      case "stop-original":
        return this.stopContainer(run.original.Id, run.original);
      case "stop-shadow":
        return this.stopContainer(run.shadowId, undefined);
      case "start-shadow":
        return this.startContainer(run.shadowId);
      case "start-original":
        return this.startOriginal(run);
      case "health-gate":
      case "health-gate-original": {
        const toShadow = run.rec.kind === SwitchoverKind.SWITCHOVER && name === "health-gate";
        const id = toShadow ? run.shadowId : run.original.Id;
        const backend = toShadow ? run.shadowBackend : run.originalBackend;
        const svc = run.service !== undefined && backend !== undefined ? { backend, health: run.service.health } : undefined;
        return healthGate(d, id, svc, { deadlineMs: run.bounds.healthTimeoutMs, ...(this.o.settleMs !== undefined ? { settleMs: this.o.settleMs } : {}) });
      }
      case "redirect":
      case "redirect-back": {
        const toShadow = run.rec.kind === SwitchoverKind.SWITCHOVER && name === "redirect";
        const to = toShadow ? run.shadowBackend : run.originalBackend;
        if (addr === undefined || to === undefined) return "skipped: no managed service";
        await this.redirect(addr, to);
        run.rec.switchMs = Date.now() - run.receivedAt;
        return `${addr} -> ${to.host}:${to.port}`;
      }
      case "commit":
        return this.commit(run);
      default:
        throw new ShadowError(Code.Internal, `unknown step ${name}`);
    }
  }

  /** Runs a step unless the record has it done; journaled before and after; retried while the engine is away. */
  private async step(run: Run, name: string, fn: () => Promise<string>): Promise<void> {
    if (done(run.rec, name)) return;
    const s: SwitchoverStep = create(SwitchoverStepSchema, { name, state: "running", startedAt: timestampNow() });
    run.rec.steps.push(s);
    await this.save(run);
    const t0 = performance.now();
    try {
      s.message = await withEngineRetry(fn, this.engineRetryMs, (err, attempt) =>
        this.o.log.warn({ switchover: run.rec.id, step: name, attempt, err: message(err) }, "engine unreachable; step retried"),
      );
      s.state = s.message.startsWith("skipped") ? "skipped" : "done";
    } catch (err) {
      s.state = "failed";
      s.message = message(err);
      throw err;
    } finally {
      s.durationMs = performance.now() - t0;
      await this.save(run);
    }
    if (process.env[KILL_AFTER_STEP_ENV] === name) process.kill(process.pid, "SIGKILL");
  }

  // ---- going back ----------------------------------------------------------------------------

  /** A switchover that did not move traffic (or failed before): the original serves again. */
  private async undo(run: Run, cause: unknown, trigger: SwitchoverTrigger): Promise<void> {
    run.rec.error ||= message(cause);
    this.o.log.warn({ switchover: run.rec.id, container: run.rec.containerId, err: run.rec.error, trigger: SwitchoverTrigger[trigger] }, "switchover rolled back");
    try {
      for (const name of UNDO_STEPS) await this.step(run, name, () => this.act(run, name));
      run.rec.outcome = SwitchoverOutcome.ROLLED_BACK;
    } catch (err) {
      run.rec.outcome = SwitchoverOutcome.FAILED;
      run.rec.error = `${run.rec.error}; the rollback failed too: ${message(err)}`;
    }
    await this.finish(run.rec);
  }

  /** A rollback record's steps; `sw` (the switchover undone) is marked rolled back when they succeed. */
  private async back(run: Run, sw: SwitchoverRecord | undefined): Promise<void> {
    try {
      for (const name of ROLLBACK_STEPS[modeName(run.rec.mode)]) await this.step(run, name, () => this.act(run, name));
      run.rec.outcome = SwitchoverOutcome.SUCCEEDED;
    } catch (err) {
      run.rec.outcome = SwitchoverOutcome.FAILED;
      run.rec.error = message(err);
      // The original cannot serve: traffic stays with (or goes back to) the shadow if it still runs.
      if (run.service !== undefined && run.shadowBackend !== undefined) {
        await this.startContainer(run.shadowId).catch(() => undefined);
        await this.redirect(run.service.address, run.shadowBackend).catch(() => undefined);
      }
    }
    await this.finish(run.rec);
    if (sw !== undefined && run.rec.outcome === SwitchoverOutcome.SUCCEEDED) {
      sw.outcome = SwitchoverOutcome.ROLLED_BACK;
      sw.error ||= `rolled back by ${run.rec.id}${run.rec.reason !== "" ? `: ${run.rec.reason}` : ""}`;
      await this.finish(sw);
    }
  }

  /** The observation window: the shadow exiting or turning unhealthy in it rolls the switchover back. */
  private observe(run: Run): void {
    const abort = new AbortController();
    this.observing.set(run.rec.id, abort);
    const watch = async () => {
      const s = create(SwitchoverStepSchema, { name: "observe", state: "running", startedAt: timestampNow() });
      run.rec.steps.push(s);
      await this.save(run);
      const t0 = performance.now();
      let problem: string | undefined;
      while (!abort.signal.aborted && performance.now() - t0 < run.bounds.observeMs && problem === undefined) {
        await new Promise((r) => setTimeout(r, Math.min(200, run.bounds.observeMs)));
        if (abort.signal.aborted) break;
        try {
          const c = await this.o.docker.getContainer(run.shadowId).inspect();
          if (!c.State.Running) problem = `the shadow ${c.State.Status} (exit code ${c.State.ExitCode}) during the observation window`;
          else if (c.State.Health?.Status === "unhealthy") problem = "the shadow turned unhealthy during the observation window";
        } catch (err) {
          if (isEngineNotFound(err)) problem = "the shadow was removed during the observation window";
        }
      }
      s.durationMs = performance.now() - t0;
      if (abort.signal.aborted) {
        s.state = "skipped";
        s.message = this.stopped ? "the agent stopped; observed again after its restart" : "ended by a rollback";
        if (!this.stopped) await this.save(run);
        return;
      }
      if (problem === undefined) {
        s.state = "done";
        s.message = `the shadow ran ${run.bounds.observeMs} ms without a problem`;
        run.rec.outcome = SwitchoverOutcome.SUCCEEDED;
        await this.finish(run.rec);
        return;
      }
      s.state = "failed";
      s.message = problem;
      run.rec.error = problem;
      await this.save(run);
      this.observing.delete(run.rec.id);
      const r = await this.rollback(create(RollbackSchema, { containerId: run.rec.containerId, reason: problem, switchoverId: run.rec.id, trigger: SwitchoverTrigger.AUTOMATIC }), `${run.rec.id}-rollback`);
      this.o.log.warn({ switchover: run.rec.id, rollback: `${run.rec.id}-rollback`, status: CommandStatus[r.status], why: problem }, "automatic rollback after the observation window's check");
    };
    const p = watch()
      .catch((err: unknown) => this.o.log.warn({ switchover: run.rec.id, err: message(err) }, "cannot observe the shadow"))
      .finally(() => {
        if (this.observing.get(run.rec.id) === abort) this.observing.delete(run.rec.id);
        this.background.delete(p);
      });
    this.background.add(p);
  }

  // ---- engine and proxy operations (each idempotent) -----------------------------------------

  private async startContainer(id: string): Promise<string> {
    try {
      await this.o.docker.getContainer(id).start();
      return "started";
    } catch (err) {
      if (statusOf(err) === 304) return "already running";
      throw err;
    }
  }

  private async stopContainer(id: string, c: Docker.ContainerInspectInfo | undefined): Promise<string> {
    const t = (c?.Config as { StopTimeout?: unknown } | undefined)?.StopTimeout;
    try {
      await this.o.docker.getContainer(id).stop(typeof t === "number" ? { t } : {});
      return "stopped (kept)";
    } catch (err) {
      if (statusOf(err) === 304) return "already stopped";
      if (isEngineNotFound(err)) return "skipped: the container is gone";
      throw err;
    }
  }

  /** Starts the original, or recreates it from the snapshot image (and its kept inspect data) if it was removed. */
  private async startOriginal(run: Run): Promise<string> {
    const there = await this.inspect(run.original.Id);
    if (there !== undefined) return this.startContainer(there.Id);
    const image = run.rec.snapshotImage || run.original.Image;
    const c = run.original.Config;
    const stop = c as { StopTimeout?: unknown; StopSignal?: unknown };
    const name = run.original.Name.replace(/^\//, "");
    const opts: Docker.ContainerCreateOptions = {
      Image: image,
      Cmd: c.Cmd ?? undefined,
      ...(c.Entrypoint !== undefined && c.Entrypoint !== null ? { Entrypoint: c.Entrypoint } : {}),
      Env: c.Env ?? [],
      Labels: c.Labels ?? {},
      WorkingDir: c.WorkingDir,
      User: c.User,
      ...(c.Healthcheck ? { Healthcheck: c.Healthcheck } : {}),
      ...(typeof stop.StopTimeout === "number" ? { StopTimeout: stop.StopTimeout } : {}),
      ...(typeof stop.StopSignal === "string" && stop.StopSignal !== "" ? { StopSignal: stop.StopSignal } : {}),
      HostConfig: run.original.HostConfig,
    };
    let created: Docker.Container;
    try {
      created = await this.o.docker.createContainer({ ...opts, name });
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      created = await this.o.docker.createContainer({ ...opts, name: `${name}-restored-${Date.now().toString(36)}` });
    }
    await created.start();
    const fresh = await created.inspect();
    run.original = fresh;
    run.rec.containerId = fresh.Id;
    run.originalBackend = run.service === undefined ? undefined : serviceBackend(fresh, run.service.port);
    return `recreated from ${image === run.rec.snapshotImage ? "the snapshot image" : "the original's image (no snapshot)"} ${image.slice(0, 19)} as ${fresh.Id.slice(0, 12)}`;
  }

  /** The stopped original's writable layer as an image; a commit run again finds the first one. */
  private async commit(run: Run): Promise<string> {
    const found = await this.o.docker.listImages({ filters: { label: [`${SNAPSHOT_LABELS.switchover}=${run.rec.id}`] } });
    let id = found[0]?.Id;
    if (id === undefined) {
      const labels = {
        [SNAPSHOT_LABELS.of]: run.original.Id,
        [SNAPSHOT_LABELS.at]: new Date().toISOString(),
        [SNAPSHOT_LABELS.reason]: run.rec.reason.replace(/["\\\n]/g, " ").slice(0, 200) || "switchover",
        [SNAPSHOT_LABELS.switchover]: run.rec.id,
      };
      const change = `LABEL ${Object.entries(labels)
        .map(([k, v]) => `${k}="${v}"`)
        .join(" ")}`;
      const r = (await this.o.docker.getContainer(run.original.Id).commit({ pause: false, changes: change, comment: `shadowlayer snapshot before switchover ${run.rec.id}` })) as { Id?: string };
      id = r.Id ?? "";
    }
    run.rec.snapshotImage = id;
    return `snapshot image ${id.slice(0, 19)}`;
  }

  /** Traffic to `to`: a new listener, or an atomic swap (which also ends a hold). */
  private async redirect(address: string, to: Backend): Promise<void> {
    if (this.o.proxy.stats().some((s) => s.service === address)) this.o.proxy.swap(address, to);
    else await this.o.proxy.ensure(address, address, to);
  }

  // ---- bookkeeping ---------------------------------------------------------------------------

  private runOf(rec: SwitchoverRecord, original: Docker.ContainerInspectInfo, shadow: Docker.ContainerInspectInfo | undefined, receivedAt: number, bounds: SwitchoverBounds): Run {
    const service = managedService(original.Config.Labels);
    const shadowPort = managedService(shadow?.Config.Labels)?.port ?? service?.shadowPort;
    return {
      rec,
      original,
      shadowId: rec.shadowContainerId,
      service,
      originalBackend: service === undefined ? undefined : serviceBackend(original, service.port),
      shadowBackend: service === undefined || shadow === undefined || shadowPort === undefined ? undefined : serviceBackend(shadow, shadowPort),
      receivedAt,
      bounds,
    };
  }

  private async save(run: Run): Promise<void> {
    run.rec.updatedAt = timestampNow();
    await this.o.records.put(run.rec);
  }

  private async finish(rec: SwitchoverRecord): Promise<void> {
    rec.updatedAt = timestampNow();
    if (isFinished(rec)) rec.finishedAt = timestampNow();
    await this.o.records.put(rec);
    if (isFinished(rec)) this.o.onFinished?.(rec);
  }

  /** Marks the container (and its service) busy; returns why not when something else holds it. */
  private claim(c: Docker.ContainerInspectInfo): string | undefined {
    const addr = managedService(c.Config.Labels)?.address;
    if (this.busy.has(c.Id) || (addr !== undefined && this.busy.has(addr))) {
      return `already running: a switchover or rollback of ${c.Name.replace(/^\//, "")}${addr !== undefined ? ` (service ${addr})` : ""} is under way`;
    }
    this.busy.add(c.Id);
    if (addr !== undefined) this.busy.add(addr);
    return undefined;
  }

  private release(c: Docker.ContainerInspectInfo): void {
    this.busy.delete(c.Id);
    const addr = managedService(c.Config.Labels)?.address;
    if (addr !== undefined) this.busy.delete(addr);
  }

  private async inspect(ref: string): Promise<Docker.ContainerInspectInfo | undefined> {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/.test(ref)) return undefined;
    try {
      return await this.o.docker.getContainer(ref).inspect();
    } catch (err) {
      if (isEngineNotFound(err)) return undefined;
      throw err;
    }
  }

  /** The named shadow, or the newest prepared (created, never started) shadow of the original. */
  private async pickShadow(original: Docker.ContainerInspectInfo, named: string): Promise<Docker.ContainerInspectInfo | string> {
    if (named !== "") {
      const s = await this.inspect(named);
      if (s === undefined || s.Config.Labels?.[SHADOW_CONTAINER_LABELS.shadowOf] !== original.Id) return `no shadow ${JSON.stringify(named.slice(0, 100))} of ${original.Name.replace(/^\//, "")} on this node`;
      return s;
    }
    const ready = (await this.shadows.list(original.Id)).filter((s) => s.state === "created");
    const first = ready[0];
    if (first === undefined) return `no prepared shadow of ${original.Name.replace(/^\//, "")} on this node`;
    return (await this.inspect(first.id)) ?? `the shadow ${first.name} went away`;
  }

  /** The newest switchover of the container (original or shadow; id, prefix or name) that can be undone. */
  private undoable(ref: string, switchoverId: string): SwitchoverRecord | string {
    const candidates = this.o.records
      .all()
      .filter((r) => r.kind === SwitchoverKind.SWITCHOVER && (r.outcome === SwitchoverOutcome.OBSERVING || r.outcome === SwitchoverOutcome.SUCCEEDED))
      .filter((r) => (switchoverId !== "" ? r.id === switchoverId : true))
      .filter((r) => ref === "" || [r.containerId, r.shadowContainerId].some((id) => ref.length >= 4 && id.startsWith(ref)) || r.containerName === ref || r.shadowContainerName === ref);
    const newest = candidates.at(-1);
    if (newest === undefined) return `no container ${JSON.stringify(ref.slice(0, 100))} with a switchover to undo on this node`;
    return newest;
  }
}

function done(rec: SwitchoverRecord, name: string): boolean {
  return rec.steps.some((s) => s.name === name && (s.state === "done" || s.state === "skipped"));
}

/** The command's answer from the record as it stands. */
export function outcomeOf(rec: SwitchoverRecord): CommandOutcome {
  const ok = rec.outcome === SwitchoverOutcome.OBSERVING || rec.outcome === SwitchoverOutcome.SUCCEEDED;
  const what = rec.kind === SwitchoverKind.ROLLBACK ? "rollback" : "switchover";
  return {
    status: ok ? CommandStatus.OK : CommandStatus.FAILED,
    message: ok ? `${what} ${SwitchoverOutcome[rec.outcome].toLowerCase()}` : `${what} ${SwitchoverOutcome[rec.outcome].toLowerCase().replace("_", " ")}: ${rec.error}`,
    switchover: clone(SwitchoverRecordSchema, rec),
  };
}

/** Refused before anything changed: REJECTED, with a record that says so (not stored). */
function refused(id: string, kind: SwitchoverKind, container: string, why: string): CommandOutcome {
  const rec = create(SwitchoverRecordSchema, { id, kind, containerId: container, outcome: SwitchoverOutcome.REFUSED, error: why, requestedAt: timestampNow(), finishedAt: timestampNow() });
  return { status: CommandStatus.REJECTED, message: why, switchover: rec };
}

