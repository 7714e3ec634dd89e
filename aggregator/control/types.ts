/**
 * The control stage's contract: every trigger (proactive risk, drift detections, the Falco
 * intake, an operator) asks for a switchover the same way, and gets the record back.
 */
import type { DataMode, SwitchoverRecord, SwitchoverTrigger } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";

export interface SwitchoverAsk {
  /** Container id, id prefix (Falco sends the first 12 hex digits) or name. */
  container: string;
  trigger: SwitchoverTrigger;
  /** Why, in words (kept with the record; cut to a bound by the control). */
  reason: string;
  mode?: DataMode;
  /** No shadow ready: rebuild on demand and wait (the record says WAITING), else refuse. */
  rebuildIfMissing?: boolean;
}

export interface RollbackAsk {
  container: string;
  trigger: SwitchoverTrigger;
  reason: string;
}

/**
 * Asks for switchovers and rollbacks. Rejects with ShadowError NotFound (unknown container) or
 * FailedPrecondition (one already running for the container; nothing to roll back; no shadow and
 * no rebuild asked for); otherwise resolves with the record as it stands once the agent accepted
 * the command (or WAITING while a rebuild runs).
 */
export interface SwitchoverRequester {
  switchover(ask: SwitchoverAsk): Promise<SwitchoverRecord>;
  rollback(ask: RollbackAsk): Promise<SwitchoverRecord>;
}

/** The records as the aggregator keeps them (every agent report, every control decision). */
export interface SwitchoverRecordsView {
  all(): SwitchoverRecord[];
  get(id: string): SwitchoverRecord | undefined;
  on(event: "upsert", fn: (r: SwitchoverRecord) => void): unknown;
  off(event: "upsert", fn: (r: SwitchoverRecord) => void): unknown;
}
