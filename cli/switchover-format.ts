/**
 * `switchover`, `rollback` and `history` output: the history as a table (time, container, kind,
 * trigger, outcome, switch time, each step with its duration, reason), a switchover's progress as
 * lines (the wait for a rebuild, each step as it completes, the outcome), and JSON for machines
 * (the protobuf JSON form). Reasons, names, errors and step messages quote containers, Falco
 * outputs and probes: every one reaches the terminal through table.ts or safeLine.
 */
import { toJson } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  DataMode,
  SwitchoverEventSchema,
  SwitchoverKind,
  SwitchoverOutcome,
  SwitchoverRecordSchema,
  SwitchoverTrigger,
  type SwitchoverEvent,
  type SwitchoverRecord,
  type SwitchoverStep,
} from "../proto/gen/shadowlayer/v1/switchover_pb.js";
import { Code, ShadowError } from "../common/errors.js";
import { shortDuration } from "./rebuilds-format.js";
import { renderTable } from "./table.js";
import { safeLine } from "./terminal-safe.js";

/** A reason in a table row; `--json` has it whole. */
const ROW_REASON_CHARS = 80;

const label = (e: object, v: number, prefix: string): string => String((e as Record<number, string>)[v] ?? prefix).toLowerCase().replace(/_/g, "-");

export const kindLabel = (k: SwitchoverKind): string => label(SwitchoverKind, k, "unspecified");
export const triggerLabel = (t: SwitchoverTrigger): string => label(SwitchoverTrigger, t, "unspecified");
export const outcomeLabel = (o: SwitchoverOutcome): string => label(SwitchoverOutcome, o, "unspecified");

/** `--mode exclusive|shared`. */
export function parseMode(mode: string | undefined): DataMode {
  if (mode === undefined) return DataMode.UNSPECIFIED;
  if (mode === "exclusive") return DataMode.EXCLUSIVE;
  if (mode === "shared") return DataMode.SHARED;
  throw new ShadowError(Code.InvalidArgument, `--mode: expected exclusive or shared, got ${JSON.stringify(mode)}`);
}

/** Nothing more will happen to it. */
export function isFinal(r: SwitchoverRecord): boolean {
  return r.outcome !== SwitchoverOutcome.WAITING && r.outcome !== SwitchoverOutcome.RUNNING && r.outcome !== SwitchoverOutcome.OBSERVING && r.outcome !== SwitchoverOutcome.UNSPECIFIED;
}

/** An end the caller did not ask for: the exit status says so. */
export function isFailure(r: SwitchoverRecord): boolean {
  return r.outcome === SwitchoverOutcome.FAILED || r.outcome === SwitchoverOutcome.REFUSED || (r.kind === SwitchoverKind.SWITCHOVER && r.outcome === SwitchoverOutcome.ROLLED_BACK);
}

const time = (t: Timestamp | undefined): string => (t === undefined ? "" : timestampDate(t).toISOString().slice(0, 19).replace("T", " "));

function containerCell(r: SwitchoverRecord): string {
  const original = r.containerName || r.containerId.slice(0, 12);
  const shadow = r.shadowContainerName || r.shadowContainerId.slice(0, 12);
  if (shadow === "") return original;
  return r.kind === SwitchoverKind.ROLLBACK ? `${shadow} → ${original}` : `${original} → ${shadow}`;
}

function stepsCell(steps: readonly SwitchoverStep[]): string {
  return steps.map((s) => `${s.name} ${s.state === "done" ? "" : `${s.state} `}${shortDuration(s.durationMs)}`).join(", ") || "-";
}

function outcomeCell(r: SwitchoverRecord): string {
  const o = outcomeLabel(r.outcome);
  if (r.outcome === SwitchoverOutcome.WAITING && r.waitingForJob !== "") return `${o} (job ${r.waitingForJob.slice(0, 12)})`;
  return r.recovery !== "" ? `${o} (recovered)` : o;
}

function reasonCell(r: SwitchoverRecord): string {
  const text = r.error !== "" && isFailure(r) ? `${r.reason} — ${r.error}` : r.reason;
  return text.length > ROW_REASON_CHARS ? `${text.slice(0, ROW_REASON_CHARS - 1)}…` : text || "-";
}

/** The history, one row per record, in the order given (newest first from ListSwitchovers). */
export function renderHistory(records: readonly SwitchoverRecord[]): string {
  return renderTable(
    ["TIME", "CONTAINER", "KIND", "TRIGGER", "OUTCOME", "SWITCH", "STEPS", "REASON"],
    records.map((r) => [time(r.requestedAt), containerCell(r), kindLabel(r.kind), triggerLabel(r.trigger), outcomeCell(r), r.switchMs > 0 ? shortDuration(r.switchMs) : "-", stepsCell(r.steps), reasonCell(r)]),
  );
}

export const recordJson = (r: SwitchoverRecord) => toJson(SwitchoverRecordSchema, r);
export const switchoverEventJson = (e: SwitchoverEvent) => toJson(SwitchoverEventSchema, e);

/** A step that finished, as one line of a switchover's progress. */
export function stepLine(s: SwitchoverStep): string {
  return safeLine`  ${s.name}  ${s.state}  ${shortDuration(s.durationMs)}${s.message !== "" ? `  ${s.message}` : ""}`;
}

/** The last line of a switchover or rollback followed to its end. */
export function outcomeLine(r: SwitchoverRecord): string {
  const what = `${kindLabel(r.kind)} ${r.id}`;
  const extra = [
    r.switchMs > 0 ? `switched in ${shortDuration(r.switchMs)}` : "",
    r.connectionsDrained + r.connectionsCut > 0 ? `${r.connectionsDrained} connections drained, ${r.connectionsCut} cut` : "",
    r.recovery !== "" ? `recovery: ${r.recovery}` : "",
    r.error !== "" ? r.error : "",
  ].filter((x) => x !== "");
  return safeLine`${what}: ${outcomeLabel(r.outcome)}${extra.length > 0 ? ` (${extra.join("; ")})` : ""}`;
}

/**
 * Turns a record's successive states into progress lines: the wait for a rebuild, the start on
 * the node, each step once it finished, observing; the caller prints the outcome.
 */
export class ProgressLines {
  private readonly said = new Set<string>();

  lines(r: SwitchoverRecord): string[] {
    const out: string[] = [];
    const once = (key: string, line: string) => {
      if (this.said.has(key)) return;
      this.said.add(key);
      out.push(line);
    };
    if (r.outcome === SwitchoverOutcome.WAITING) once(`wait ${r.waitingForJob}`, safeLine`waiting for rebuild job ${r.waitingForJob} (no shadow was ready and prepared; it goes on once one is)`);
    if (r.outcome !== SwitchoverOutcome.WAITING && r.outcome !== SwitchoverOutcome.UNSPECIFIED)
      once("start", safeLine`${kindLabel(r.kind)} ${r.id} of ${containerCell(r)} on node ${r.node}${r.reason !== "" ? ` (${r.reason})` : ""}`);
    r.steps.forEach((s, i) => {
      if (s.state !== "running") once(`step ${i} ${s.name}`, stepLine(s));
    });
    if (r.outcome === SwitchoverOutcome.OBSERVING) once("observe", safeLine`  observing the shadow${r.serviceAddress !== "" ? ` behind ${r.serviceAddress}` : ""}`);
    return out;
  }
}
