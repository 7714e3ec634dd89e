/**
 * `rebuilds` output: the jobs as a table (riskiest work first), the builder pool under it and
 * where shadows go, one job in detail (each step's timing, its log tail, where the shadow was
 * prepared), and JSON for machines (the protobuf JSON form). Image names, labels and log lines
 * come from images an attacker may have written: every one goes through terminal-safe.
 */
import { toJson } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ListRebuildsResponseSchema, RebuildEventSchema, RebuildJobSchema, RebuildState, type BuilderStatus, type ListRebuildsResponse, type RebuildEvent, type RebuildJob } from "../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { renderTable } from "./table.js";
import { safeLine } from "./terminal-safe.js";

/** Reasons shown per row; the rest are counted (`--job` lists all). */
const ROW_REASONS = 3;

const STATE_ORDER: Record<number, number> = {
  [RebuildState.RUNNING]: 0,
  [RebuildState.QUEUED]: 1,
  [RebuildState.FAILED]: 2,
  [RebuildState.READY]: 3,
  [RebuildState.CANCELLED]: 4,
  [RebuildState.SUPERSEDED]: 5,
};

export function stateLabel(s: RebuildState): string {
  return (RebuildState[s] ?? "UNSPECIFIED").toLowerCase();
}

const ms = (t: Timestamp | undefined) => (t === undefined ? 0 : timestampDate(t).getTime());

/** A duration as people read it: 850ms, 12s, 4m, 3h, 2d. */
export function shortDuration(msec: number): string {
  if (msec < 1000) return `${Math.max(0, Math.round(msec))}ms`;
  const s = msec / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/** Running first, then the queue (riskiest first), then what finished (newest first). */
export function sortJobs(jobs: readonly RebuildJob[]): RebuildJob[] {
  return [...jobs].sort(
    (a, b) =>
      (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) ||
      (a.state === RebuildState.QUEUED || a.state === RebuildState.RUNNING ? b.risk - a.risk : ms(b.updatedAt) - ms(a.updatedAt)) ||
      (a.id < b.id ? -1 : 1),
  );
}

function stateCell(j: RebuildJob, now: number): string {
  const s = stateLabel(j.state);
  if (j.state === RebuildState.QUEUED && j.nextAttemptAt !== undefined) return `${s} (retry ${j.attempts + 1} in ${shortDuration(ms(j.nextAttemptAt) - now)})`;
  if (j.state === RebuildState.FAILED) return `${s} (${j.attempts} attempts)`;
  return j.forced ? `${s} (forced)` : s;
}

function reasonsCell(reasons: readonly string[]): string {
  if (reasons.length <= ROW_REASONS) return reasons.join(",") || "-";
  return `${reasons.slice(0, ROW_REASONS).join(",")} +${reasons.length - ROW_REASONS}`;
}

function shadowCell(j: RebuildJob): string {
  const sh = j.shadow;
  if (sh === undefined || sh.reference === "") return j.state === RebuildState.FAILED || j.state === RebuildState.QUEUED ? (j.error !== "" ? `- (${j.error.slice(0, 60)})` : "-") : "-";
  const ref = sh.reference.length > 40 ? `${sh.reference.slice(0, 37)}...` : sh.reference;
  return `${ref}${sh.localOnly ? " (local)" : ""}`;
}

export function renderRebuilds(jobs: readonly RebuildJob[], now = Date.now()): string {
  return renderTable(
    ["JOB", "IMAGE", "STRATEGY", "STATE", "PROGRESS", "RISK", "REASONS", "BUILDER", "AGE", "SHADOW"],
    sortJobs(jobs).map((j) => [
      j.id.slice(0, 12),
      j.image || j.imageId.slice(0, 19),
      j.strategy || "-",
      stateCell(j, now),
      `${j.progress}%`,
      j.risk.toFixed(1),
      reasonsCell(j.reasons),
      j.builder || "-",
      shortDuration(now - ms(j.createdAt)),
      shadowCell(j),
    ]),
  );
}

/** The pool, one line per builder: health, running/concurrency, the cgroup limits its builds run under. */
export function renderBuilders(builders: readonly BuilderStatus[]): string {
  if (builders.length === 0) return "builders: none configured";
  const lines = ["builders:"];
  for (const b of builders) {
    const health = b.healthy ? "healthy" : `unhealthy: ${b.error || "health check failed"}`;
    lines.push(safeLine`  ${b.name}  ${health}  ${b.running}/${b.concurrency} running  limits: ${b.limits || "none"}  ${b.endpoint}${b.engineVersion ? ` (engine ${b.engineVersion})` : ""}`);
  }
  return lines.join("\n");
}

/** Where shadows go, in a sentence. */
export function destinationLine(destination: string): string {
  if (destination === "" || destination.startsWith("local engine")) return "shadows stay in the local engine (no registry configured)";
  return safeLine`shadows are pushed to ${destination}`;
}

function countsLine(counts: Record<string, number>): string {
  const parts = Object.entries(counts)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`);
  return safeLine`jobs: ${parts.length === 0 ? "none" : parts.join(", ")}`;
}

/** The whole `rebuilds` view. */
export function renderRebuildsView(r: { jobs: readonly RebuildJob[]; builders: readonly BuilderStatus[]; destination: string; counts: Record<string, number> }, now = Date.now()): string {
  const parts = [r.jobs.length === 0 ? "no rebuild jobs" : renderRebuilds(r.jobs, now), "", countsLine(r.counts), renderBuilders(r.builders), destinationLine(r.destination)];
  return parts.join("\n");
}

/** One job in detail: what, why, each step's timing, the shadow, where it was prepared, the log tail. */
export function renderRebuildJob(j: RebuildJob, now = Date.now()): string {
  const lines = [
    safeLine`job ${j.id}  ${stateCell(j, now)}  progress ${j.progress}%  attempts ${j.attempts}`,
    safeLine`image ${j.image}  ${j.imageId}`,
    safeLine`source layer ${j.sourceLayer || "-"}  ${j.sourceLayerName}`,
    safeLine`reasons ${j.reasons.join(", ") || "-"}`,
    safeLine`risk ${j.risk.toFixed(1)}  strategy ${j.strategy || "not chosen yet"}${j.strategyReason ? ` (${j.strategyReason})` : ""}  builder ${j.builder || "-"}`,
    safeLine`created ${j.createdAt ? timestampDate(j.createdAt).toISOString() : "-"}  updated ${j.updatedAt ? timestampDate(j.updatedAt).toISOString() : "-"}${j.nextAttemptAt ? `  next attempt ${timestampDate(j.nextAttemptAt).toISOString()}` : ""}`,
    safeLine`containers ${j.containers.length === 0 ? "-" : j.containers.map((c) => c.slice(0, 12)).join(", ")}  nodes ${j.nodes.join(", ") || "-"}`,
  ];
  if (j.error !== "") lines.push(safeLine`error: ${j.error}`);
  lines.push("", "steps:");
  if (j.steps.length === 0) lines.push("  none yet");
  else
    lines.push(
      ...renderTable(
        ["STEP", "STATE", "STARTED", "DURATION", "DETAIL"],
        j.steps.map((s) => [s.name, s.state, s.startedAt ? timestampDate(s.startedAt).toISOString() : "-", s.state === "running" && s.startedAt ? `${shortDuration(now - ms(s.startedAt))} so far` : shortDuration(s.durationMs), s.detail || "-"]),
      )
        .split("\n")
        .map((l) => `  ${l}`),
    );
  const sh = j.shadow;
  if (sh !== undefined) {
    lines.push("", "shadow:");
    lines.push(safeLine`  ${sh.reference}${sh.localOnly ? " (in the local engine)" : ""}`);
    lines.push(safeLine`  image ${sh.imageId}${sh.manifestDigest ? `  manifest ${sh.manifestDigest}` : ""}`);
    lines.push(safeLine`  signature ${sh.signatureRef || "none"}  vulnerabilities ${sh.vulnsBefore} -> ${sh.vulnsAfter}  layers reused ${sh.layersReused}/${sh.layerIds.length}  adds ${sh.addedBytes} bytes`);
    for (const [k, v] of Object.entries(sh.labels).sort(([a], [b]) => (a < b ? -1 : 1))) lines.push(safeLine`  label ${k}=${v}`);
  }
  lines.push("", "preparations:");
  if (j.preparations.length === 0) lines.push("  none");
  else
    lines.push(
      ...renderTable(
        ["NODE", "CONTAINER", "STATE", "SHADOW CONTAINER", "AT", "MESSAGE"],
        j.preparations.map((p) => [p.node, p.containerId.slice(0, 12), p.state, p.shadowContainerId.slice(0, 12) || "-", p.at ? timestampDate(p.at).toISOString() : "-", p.message || "-"]),
      )
        .split("\n")
        .map((l) => `  ${l}`),
    );
  lines.push("", `log tail (${j.logTail.length} lines):`);
  for (const l of j.logTail) lines.push(safeLine`  | ${l}`);
  return lines.map((l) => l.trimEnd()).join("\n");
}

/** `--json`: the protobuf JSON form (field names in lowerCamelCase, as every protobuf tool reads them). */
export function rebuildsJson(r: ListRebuildsResponse): unknown {
  return toJson(ListRebuildsResponseSchema, r);
}

export function rebuildJobJson(j: RebuildJob): unknown {
  return toJson(RebuildJobSchema, j);
}

export function rebuildEventJson(e: RebuildEvent): unknown {
  return toJson(RebuildEventSchema, e);
}
