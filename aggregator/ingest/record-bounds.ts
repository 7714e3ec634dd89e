/**
 * A switchover record cut to the aggregator's bounds before it is stored. Reasons, names, errors
 * and step messages come from containers (a Falco output, a health probe's answer, a container's
 * name) and from agents: each string is cut, the steps are at most MAX_STEPS, so a record is
 * small whatever its sender put in it.
 */
import { clone } from "@bufbuild/protobuf";
import { SwitchoverRecordSchema, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";

/** Steps kept per record: a switchover has about ten, a rollback after a failed one about twenty. */
export const MAX_STEPS = 64;
/** Free text: a reason, an error, a recovery note. */
export const RECORD_TEXT_CHARS = 2048;
/** A name, an image reference, an address. */
export const RECORD_NAME_CHARS = 256;
/** A step's name and state. */
const STEP_NAME_CHARS = 64;
/** A step's message. */
const STEP_TEXT_CHARS = 512;
/** A record id: the command ids the aggregator makes are far shorter. */
export const RECORD_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** `s` cut to `max` UTF-16 units, never inside a surrogate pair, with "…" when cut. */
export function cutText(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max - 1;
  const c = s.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  return `${s.slice(0, end)}…`;
}

/** A copy of `r` with every string and list within the bounds above. */
export function boundRecord(r: SwitchoverRecord): SwitchoverRecord {
  const b = clone(SwitchoverRecordSchema, r);
  for (const k of ["containerName", "shadowContainerName", "shadowImage", "snapshotImage", "serviceAddress", "node", "containerId", "shadowContainerId", "jobId", "rollbackOf", "waitingForJob"] as const) b[k] = cutText(b[k], RECORD_NAME_CHARS);
  for (const k of ["reason", "error", "recovery"] as const) b[k] = cutText(b[k], RECORD_TEXT_CHARS);
  if (b.steps.length > MAX_STEPS) b.steps = [...b.steps.slice(0, MAX_STEPS - 1), b.steps[b.steps.length - 1]!];
  for (const s of b.steps) {
    s.name = cutText(s.name, STEP_NAME_CHARS);
    s.state = cutText(s.state, STEP_NAME_CHARS);
    s.message = cutText(s.message, STEP_TEXT_CHARS);
  }
  return b;
}
