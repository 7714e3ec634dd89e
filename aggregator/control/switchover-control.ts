/**
 * The aggregator's switchover control: every trigger (proactive risk, drift, the Falco intake, an
 * operator) asks here, and here is decided whether, to which shadow, and with which command id.
 *
 * - One at a time per container: a request while the container has a waiting or running record
 *   (or one being decided) is refused with FailedPrecondition.
 * - The shadow is the newest READY job of the container's image prepared on its node
 *   (prepared-shadow.ts). None: with rebuildIfMissing the image's job is forced (or a ready one
 *   still being prepared is awaited) and the record waits (WAITING, waiting_for_job), in level, so
 *   an aggregator restart resumes the wait; it proceeds once a shadow is ready and prepared.
 * - The command id is derived from the container, the job, the trigger and the request time: the
 *   record's id, so the agent's journal answers a repeat of the same command from its journal.
 * - Rollback undoes the container's newest succeeded (or observed) switchover on its node.
 */
import { createHash } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandStatus, type CommandResult } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { RebuildState, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { SwitchoverKind, SwitchoverOutcome, SwitchoverRecordSchema, SwitchoverTrigger, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { SHADOW_CONTAINER_LABELS } from "../../agent/actions/shadow-containers.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { AgentIngest } from "../ingest/agent-service.js";
import { boundRecord, cutText, RECORD_TEXT_CHARS } from "../ingest/record-bounds.js";
import type { AggregatorMetrics } from "../metrics.js";
import { isActive, mergeReport, recordTime, type SwitchoverStore } from "../store/switchover-store.js";
import { preparationOf, preparedShadow, type PreparedShadow } from "./prepared-shadow.js";
import { checkRef, namesContainer, resolveContainer } from "./resolve-container.js";
import type { RollbackAsk, SwitchoverAsk, SwitchoverRequester } from "./types.js";

/** A switchover (snapshot, start, health gate, redirect, drain) well past its own deadlines. */
export const COMMAND_TIMEOUT_MS = 120_000;
/** How often waiting records look at their jobs and nodes again (besides every job change). */
const WAIT_SWEEP_MS = 5_000;

/** What the control reads of the rebuild scheduler, and the force it asks for. */
export interface ControlJobs {
  all(): RebuildJob[];
  get(id: string): RebuildJob | undefined;
  on(event: "upsert", fn: (j: RebuildJob) => void): unknown;
  off(event: "upsert", fn: (j: RebuildJob) => void): unknown;
  force(req: { job?: string; image?: string }): Promise<RebuildJob>;
}

export interface SwitchoverControlOptions {
  graphs: { all(): LayerGraph[]; get(id: string): LayerGraph | undefined };
  records: SwitchoverStore;
  ingest: Pick<AgentIngest, "sendCommand" | "connectedNodes">;
  /** The rebuild scheduler; without one no shadow is ever ready. */
  jobs?: ControlJobs;
  log: Logger;
  metrics?: AggregatorMetrics;
  commandTimeoutMs?: number;
  waitSweepMs?: number;
}

const TRIGGERS = new Set<number>(Object.values(SwitchoverTrigger).filter((v): v is number => typeof v === "number" && v !== 0));
const FINISHED_JOB = new Set([RebuildState.FAILED, RebuildState.CANCELLED]);

function name(e: object, v: number): string {
  return String((e as Record<number, string>)[v] ?? v).toLowerCase().replace(/_/g, "-");
}

/** The id a request's command and record carry (no "!": it is part of a store key). */
function commandId(prefix: string, ...parts: string[]): string {
  return `${prefix}-${createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 24)}`;
}

/** Whether a container is a shadow (labelled by the agent that created it). */
export function isShadowContainer(g: LayerGraph): boolean {
  return (g.labels[SHADOW_CONTAINER_LABELS.shadowOf] ?? "") !== "";
}

export class SwitchoverControl implements SwitchoverRequester {
  /** Containers whose request is being decided (before its record is stored). */
  private readonly deciding = new Set<string>();
  /** Waiting records being sent on (by id). */
  private readonly proceeding = new Set<string>();
  private sweep: NodeJS.Timeout | undefined;
  private readonly onJob = () => this.resumeWaiting();
  private readonly onRecord = (r: SwitchoverRecord) => this.noteRollback(r);
  private readonly log: Logger;
  private readonly timeoutMs: number;

  constructor(private readonly o: SwitchoverControlOptions) {
    this.log = o.log.child({ component: "switchover-control" });
    this.timeoutMs = o.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
  }

  /** Resumes the records left waiting (an aggregator restart) and follows the jobs. */
  start(): void {
    this.o.jobs?.on("upsert", this.onJob);
    this.o.records.on("upsert", this.onRecord);
    this.sweep = setInterval(() => this.resumeWaiting(), this.o.waitSweepMs ?? WAIT_SWEEP_MS);
    this.sweep.unref();
    const waiting = this.o.records.all().filter((r) => r.outcome === SwitchoverOutcome.WAITING).length;
    if (waiting > 0) this.log.info({ waiting }, "switchovers waiting for a shadow resume their wait");
    this.resumeWaiting();
  }

  stop(): void {
    this.o.jobs?.off("upsert", this.onJob);
    this.o.records.off("upsert", this.onRecord);
    if (this.sweep) clearInterval(this.sweep);
  }

  /** The shadow `g` can be switched to now, if any. */
  shadowFor(g: LayerGraph): PreparedShadow | undefined {
    return this.o.jobs === undefined ? undefined : preparedShadow(this.o.jobs.all(), g);
  }

  /** Whether `containerId` (as original or shadow) has a request being decided, waiting or running. */
  busy(containerId: string): SwitchoverRecord | true | undefined {
    if (this.deciding.has(containerId)) return true;
    return this.o.records.all().find((r) => isActive(r) && (r.containerId === containerId || r.shadowContainerId === containerId));
  }

  /** Whether the node's agent is connected (a command can reach it now). */
  reachable(node: string): boolean {
    return this.o.ingest.connectedNodes().includes(node);
  }

  /** FailedPrecondition, before anything is recorded, when the node's agent cannot take a command now. */
  private assertReachable(node: string, label: string): void {
    if (!this.reachable(node)) throw new ShadowError(Code.FailedPrecondition, `the agent of node ${node} (where ${label} runs) is not connected; nothing was sent`);
  }

  /** Claims the container for a request being decided; FailedPrecondition when it is busy. */
  private claim(g: LayerGraph, what: string): void {
    const b = this.busy(g.containerId);
    if (b !== undefined) {
      const label = g.containerName || g.containerId.slice(0, 12);
      const why = b === true ? "another request for it is being decided" : `${name(SwitchoverKind, b.kind)} ${b.id} is ${name(SwitchoverOutcome, b.outcome)}`;
      throw new ShadowError(Code.FailedPrecondition, `cannot ${what} ${label}: ${why}`);
    }
    this.deciding.add(g.containerId);
  }

  async switchover(ask: SwitchoverAsk): Promise<SwitchoverRecord> {
    const trigger = checkTrigger(ask.trigger);
    const g = resolveContainer(this.o.graphs, ask.container);
    const label = g.containerName || g.containerId.slice(0, 12);
    if (isShadowContainer(g)) throw new ShadowError(Code.FailedPrecondition, `${label} is itself a shadow (of ${g.labels[SHADOW_CONTAINER_LABELS.shadowOf]?.slice(0, 12)}): roll back to bring its original back`);
    if (g.state !== "running") throw new ShadowError(Code.FailedPrecondition, `${label} is ${g.state || "not running"}: only a running container is switched over`);
    this.claim(g, "switch over");
    try {
      const now = new Date();
      const shadow = this.shadowFor(g);
      const base = {
        kind: SwitchoverKind.SWITCHOVER,
        node: g.node,
        containerId: g.containerId,
        containerName: g.containerName,
        trigger,
        reason: cutText(ask.reason, RECORD_TEXT_CHARS),
        mode: ask.mode ?? 0,
        requestedAt: timestampFromDate(now),
        updatedAt: timestampFromDate(now),
      };
      if (shadow === undefined) {
        const jobs = this.o.jobs;
        if (ask.rebuildIfMissing !== true || jobs === undefined) {
          this.count(trigger, "refused");
          throw new ShadowError(
            Code.FailedPrecondition,
            jobs === undefined ? `no shadow is prepared for ${label}, and this aggregator plans no rebuilds` : `no shadow is ready and prepared for ${label} on node ${g.node}; ask again with rebuild_if_missing to rebuild on demand`,
          );
        }
        const job = await this.rebuildFor(g, jobs);
        const rec = create(SwitchoverRecordSchema, { ...base, id: commandId("so", g.containerId, job.id, String(trigger), now.toISOString()), jobId: job.id, waitingForJob: job.id, outcome: SwitchoverOutcome.WAITING });
        await this.o.records.put(rec);
        this.count(trigger, "waiting");
        this.log.info({ container: label, node: g.node, job: job.id.slice(0, 12), trigger: name(SwitchoverTrigger, trigger) }, "switchover waits for a shadow");
        this.resumeWaiting();
        return this.o.records.get(rec.id) ?? rec;
      }
      this.assertReachable(g.node, label);
      const rec = create(SwitchoverRecordSchema, { ...base, id: commandId("so", g.containerId, shadow.job.id, String(trigger), now.toISOString()), ...shadowFields(shadow), outcome: SwitchoverOutcome.RUNNING });
      await this.o.records.put(rec);
      this.deciding.delete(g.containerId);
      return await this.send(rec);
    } finally {
      this.deciding.delete(g.containerId);
    }
  }

  /** A job that will give `g`'s image a shadow: a ready one still being prepared, else a forced rebuild. */
  private async rebuildFor(g: LayerGraph, jobs: ControlJobs): Promise<RebuildJob> {
    const mine = jobs.all().filter((j) => j.imageId === g.imageId);
    const ready = mine.find((j) => j.state === RebuildState.READY && j.shadow !== undefined && j.shadow.reference !== "" && preparationOf(j, g)?.state !== "refused");
    if (ready !== undefined) return ready;
    const active = mine.find((j) => j.state === RebuildState.QUEUED || j.state === RebuildState.RUNNING);
    return jobs.force(active !== undefined ? { job: active.id } : { image: g.imageId });
  }

  /** Looks at every waiting record: proceeds, keeps waiting, or fails it when its rebuild ended without a shadow. */
  private resumeWaiting(): void {
    for (const r of this.o.records.all()) {
      if (r.outcome !== SwitchoverOutcome.WAITING || this.proceeding.has(r.id)) continue;
      this.proceed(r).catch((err: unknown) => this.log.warn({ record: r.id, err: String(err) }, "a waiting switchover could not go on"));
    }
  }

  private async proceed(r: SwitchoverRecord): Promise<void> {
    const g = this.o.graphs.get(r.containerId);
    if (g === undefined || g.state !== "running") {
      await this.finish(r, SwitchoverOutcome.FAILED, `the container ${g === undefined ? "went away" : `is ${g.state}`} while waiting for its shadow`);
      return;
    }
    const shadow = this.shadowFor(g);
    if (shadow === undefined) {
      const job = this.o.jobs?.get(r.waitingForJob);
      const refused = job === undefined ? undefined : preparationOf(job, g);
      if (job === undefined) await this.finish(r, SwitchoverOutcome.FAILED, `rebuild job ${r.waitingForJob} is gone`);
      else if (FINISHED_JOB.has(job.state)) await this.finish(r, SwitchoverOutcome.FAILED, `rebuild job ${job.id} is ${name(RebuildState, job.state)}: ${job.error}`);
      else if (job.state === RebuildState.READY && refused?.state === "refused") await this.finish(r, SwitchoverOutcome.FAILED, `node ${g.node} refused the shadow: ${refused.message}`);
      return;
    }
    // The agent must be there to take it; the sweep looks again.
    if (!this.reachable(g.node)) return;
    this.proceeding.add(r.id);
    try {
      const rec = changed(r, { ...shadowFields(shadow), waitingForJob: "", outcome: SwitchoverOutcome.RUNNING, updatedAt: timestampFromDate(new Date()) });
      await this.o.records.put(rec);
      this.log.info({ record: r.id, container: g.containerName, job: shadow.job.id.slice(0, 12) }, "the shadow is ready and prepared: the waiting switchover goes on");
      await this.send(rec).catch((err: unknown) => this.log.warn({ record: r.id, err: String(err) }, "the waiting switchover was not done"));
    } finally {
      this.proceeding.delete(r.id);
    }
  }

  /** Sends a RUNNING switchover record's command and records what the agent answered. */
  private async send(rec: SwitchoverRecord): Promise<SwitchoverRecord> {
    const result = await this.command(rec, {
      case: "switchover",
      value: {
        containerId: rec.containerId,
        shadowImage: rec.shadowImage,
        reason: rec.reason,
        proactive: rec.trigger === SwitchoverTrigger.PROACTIVE,
        shadowContainerId: rec.shadowContainerId,
        mode: rec.mode,
        trigger: rec.trigger,
        jobId: rec.jobId,
      },
    });
    return this.answered(rec, result);
  }

  async rollback(ask: RollbackAsk): Promise<SwitchoverRecord> {
    const trigger = checkTrigger(ask.trigger);
    const target = this.rollbackTarget(checkRef(ask.container));
    const g = this.o.graphs.get(target.containerId) ?? ({ containerId: target.containerId, containerName: target.containerName } as LayerGraph);
    this.claim(g, "roll back");
    try {
      this.assertReachable(target.node, target.containerName || target.containerId.slice(0, 12));
      const now = new Date();
      const rec = create(SwitchoverRecordSchema, {
        id: commandId("rb", target.id, String(trigger), now.toISOString()),
        kind: SwitchoverKind.ROLLBACK,
        node: target.node,
        containerId: target.containerId,
        containerName: target.containerName,
        shadowContainerId: target.shadowContainerId,
        shadowContainerName: target.shadowContainerName,
        shadowImage: target.shadowImage,
        jobId: target.jobId,
        snapshotImage: target.snapshotImage,
        serviceAddress: target.serviceAddress,
        trigger,
        reason: cutText(ask.reason, RECORD_TEXT_CHARS),
        outcome: SwitchoverOutcome.RUNNING,
        rollbackOf: target.id,
        requestedAt: timestampFromDate(now),
        updatedAt: timestampFromDate(now),
      });
      await this.o.records.put(rec);
      this.deciding.delete(g.containerId);
      const result = await this.command(rec, { case: "rollback", value: { containerId: target.containerId, snapshotId: target.snapshotImage, reason: rec.reason, switchoverId: target.id, trigger } });
      return await this.answered(rec, result);
    } finally {
      this.deciding.delete(g.containerId);
    }
  }

  /**
   * A rollback that succeeded (as answered, or reported later) undoes its switchover: the agent
   * reports that record too, and until it does the switchover's record says so here, so that it
   * is not rolled back twice.
   */
  private noteRollback(r: SwitchoverRecord): void {
    if (r.kind !== SwitchoverKind.ROLLBACK || r.outcome !== SwitchoverOutcome.SUCCEEDED || r.rollbackOf === "") return;
    const undone = this.o.records.get(r.rollbackOf);
    if (undone === undefined || !rollbackable(undone) || undone.node !== r.node) return;
    const mark = changed(undone, { outcome: SwitchoverOutcome.ROLLED_BACK, error: undone.error || `rolled back by ${r.id}`, updatedAt: timestampFromDate(new Date()) });
    this.o.records.put(mark).catch((err: unknown) => this.log.warn({ record: undone.id, err: String(err) }, "cannot mark a switchover rolled back"));
  }

  /** The newest switchover that a rollback of `ref` (the original or its shadow) undoes. */
  private rollbackTarget(ref: string): SwitchoverRecord {
    let known: LayerGraph | undefined;
    try {
      known = resolveContainer(this.o.graphs, ref);
    } catch (err) {
      if (ShadowError.from(err).code !== Code.NotFound) throw err;
    }
    const about = (r: SwitchoverRecord) =>
      known !== undefined ? r.containerId === known.containerId || r.shadowContainerId === known.containerId : namesContainer(ref, r.containerId, r.containerName) || namesContainer(ref, r.shadowContainerId, r.shadowContainerName);
    const switchovers = this.o.records
      .all()
      .filter((r) => r.kind === SwitchoverKind.SWITCHOVER && about(r))
      .sort((a, b) => recordTime(b) - recordTime(a) || (a.id < b.id ? 1 : -1));
    if (known === undefined && switchovers.length === 0) throw new ShadowError(Code.NotFound, `no container ${ref} is known`);
    const target = switchovers.find(rollbackable);
    if (target === undefined) {
      const last = switchovers[0];
      throw new ShadowError(Code.FailedPrecondition, `nothing to roll back for ${ref}: ${last === undefined ? "it was never switched over" : `its last switchover ${last.id} is ${name(SwitchoverOutcome, last.outcome)}`}`);
    }
    return target;
  }

  /**
   * Sends a command for `rec`. No agent to take it: the record is REFUSED and the error thrown.
   * No answer in time: the record is FAILED and answered as a FAILED result (the agent's own
   * report of the same id, if it comes, replaces it).
   */
  private async command(rec: SwitchoverRecord, action: { case: "switchover"; value: object } | { case: "rollback"; value: object }): Promise<CommandResult> {
    const log = this.log.child({ record: rec.id, node: rec.node, container: rec.containerName || rec.containerId.slice(0, 12) });
    try {
      log.info({ kind: name(SwitchoverKind, rec.kind), trigger: name(SwitchoverTrigger, rec.trigger), shadow: rec.shadowContainerId.slice(0, 12) }, "command sent");
      return await this.o.ingest.sendCommand(rec.node, { id: rec.id, action } as Parameters<AgentIngest["sendCommand"]>[1], this.timeoutMs);
    } catch (err) {
      const e = ShadowError.from(err);
      if (e.code === Code.FailedPrecondition) {
        // No agent is connected for the node: nothing changed there.
        await this.finish(rec, SwitchoverOutcome.REFUSED, e.message);
        this.count(rec.trigger, "refused");
        throw e;
      }
      log.warn({ err: e.message }, "no answer from the agent");
      const failed = await this.finish(rec, SwitchoverOutcome.FAILED, `${e.message}; the agent's own report, when it comes, says how it ended`);
      this.count(rec.trigger, "failed");
      return { commandId: rec.id, status: CommandStatus.FAILED, message: e.message, shadowContainerId: "", switchover: failed } as CommandResult;
    }
  }

  /** Records the agent's answer; REJECTED and UNIMPLEMENTED are thrown (FailedPrecondition, Unimplemented). */
  private async answered(rec: SwitchoverRecord, r: CommandResult): Promise<SwitchoverRecord> {
    // The agent's record of this very command (an agent that leaves its node out means its own).
    const own = r.switchover !== undefined && r.switchover.id === rec.id && (r.switchover.node === rec.node || r.switchover.node === "");
    const reported = own && r.switchover !== undefined ? changed(boundRecord(r.switchover), { node: rec.node }) : undefined;
    switch (r.status) {
      case CommandStatus.OK: {
        this.count(rec.trigger, "sent");
        if (reported === undefined) return this.o.records.get(rec.id) ?? rec;
        return this.keepNewer(reported);
      }
      case CommandStatus.REJECTED:
        await this.finish(rec, SwitchoverOutcome.REFUSED, r.message);
        this.count(rec.trigger, "refused");
        throw new ShadowError(Code.FailedPrecondition, `node ${rec.node} refused: ${r.message || "no reason given"}`);
      case CommandStatus.UNIMPLEMENTED:
        await this.finish(rec, SwitchoverOutcome.FAILED, `the agent on node ${rec.node} does not perform this command: ${r.message}`);
        this.count(rec.trigger, "failed");
        throw new ShadowError(Code.Unimplemented, `the agent on node ${rec.node} does not perform ${name(SwitchoverKind, rec.kind)}s (${r.message || "unimplemented"})`);
      default: {
        this.count(rec.trigger, "failed");
        if (reported !== undefined) return this.keepNewer(reported);
        return this.finish(rec, SwitchoverOutcome.FAILED, r.message || "the agent failed it without saying why");
      }
    }
  }

  /** Stores an agent's record unless the store already holds a newer report of it. */
  private async keepNewer(reported: SwitchoverRecord): Promise<SwitchoverRecord> {
    const prev = this.o.records.get(reported.id);
    const t = (x: SwitchoverRecord | undefined) => (x?.updatedAt === undefined ? 0 : timestampDate(x.updatedAt).getTime());
    if (prev !== undefined && t(prev) > t(reported) && !isActive(prev)) return prev;
    const merged = mergeReport(prev, reported);
    await this.o.records.put(merged);
    return merged;
  }

  /** Ends the record as the aggregator saw it end (an agent's later report of the same id wins). */
  private async finish(r: SwitchoverRecord, outcome: SwitchoverOutcome, error: string): Promise<SwitchoverRecord> {
    const now = timestampFromDate(new Date());
    const cur = this.o.records.get(r.id) ?? r;
    // The agent reported an end of its own meanwhile: keep its word.
    if (cur !== r && !isActive(cur)) return cur;
    const done = changed(cur, { outcome, error: cutText(error, RECORD_TEXT_CHARS), waitingForJob: outcome === SwitchoverOutcome.WAITING ? cur.waitingForJob : "", finishedAt: now, updatedAt: now });
    await this.o.records.put(done);
    if (outcome === SwitchoverOutcome.FAILED || outcome === SwitchoverOutcome.REFUSED) this.log.warn({ record: r.id, outcome: name(SwitchoverOutcome, outcome), error: done.error }, "switchover ended");
    return done;
  }

  private count(trigger: SwitchoverTrigger, result: string): void {
    this.o.metrics?.switchoverRequests.inc({ trigger: name(SwitchoverTrigger, trigger), result });
  }
}

/** A switchover a rollback can undo: its shadow serves (observed or final). */
function rollbackable(r: SwitchoverRecord): boolean {
  return r.kind === SwitchoverKind.SWITCHOVER && (r.outcome === SwitchoverOutcome.SUCCEEDED || r.outcome === SwitchoverOutcome.OBSERVING);
}

/** A copy of `r` with `patch` applied (records in the store are never changed in place). */
function changed(r: SwitchoverRecord, patch: Partial<Omit<SwitchoverRecord, "$typeName">>): SwitchoverRecord {
  return Object.assign(clone(SwitchoverRecordSchema, r), patch);
}

function shadowFields(s: PreparedShadow): { shadowContainerId: string; shadowImage: string; jobId: string } {
  return { shadowContainerId: s.containerId, shadowImage: s.image, jobId: s.job.id };
}

function checkTrigger(t: SwitchoverTrigger): SwitchoverTrigger {
  if (!TRIGGERS.has(t)) throw new ShadowError(Code.InvalidArgument, `trigger ${String(t)} is not one of ${[...TRIGGERS].map((x) => name(SwitchoverTrigger, x)).join(", ")}`);
  return t;
}
