/**
 * Every switchover and rollback record the aggregator knows (the agents' reports and the control's
 * own decisions), kept in level by id and all in memory, as SwitchoverRecordsView serves them.
 * Bounded: past MAX_RECORDS the oldest finished records go (a waiting or running one stays), so
 * a node that reports without end cannot fill the store.
 */
import { EventEmitter } from "node:events";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Level } from "level";
import { SwitchoverOutcome, SwitchoverRecordSchema, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { SwitchoverRecordsView } from "../control/types.js";
import { keys } from "./keys.js";
import { MessageStore } from "./message-store.js";

/** Records kept: years of switchovers on a busy cluster, a few MB in memory. */
export const MAX_RECORDS = 10_000;

export interface SwitchoverStoreEvents {
  upsert: [SwitchoverRecord];
}

const ms = (t: Timestamp | undefined): number => (t === undefined ? 0 : timestampDate(t).getTime());

/** Waiting for a shadow, or under way at an agent: not final. */
export function isActive(r: SwitchoverRecord): boolean {
  return r.outcome === SwitchoverOutcome.WAITING || r.outcome === SwitchoverOutcome.RUNNING;
}

/** When a record was asked for (else last changed): the order of listings and of pruning. */
export function recordTime(r: SwitchoverRecord): number {
  return ms(r.requestedAt) || ms(r.updatedAt);
}

/**
 * An agent's report of a record the aggregator may already hold: the agent's word wins, but what
 * only the aggregator knew (the trigger, the reason, the job, when it was asked, the wait) stays
 * where the report leaves it empty.
 */
export function mergeReport(prev: SwitchoverRecord | undefined, r: SwitchoverRecord): SwitchoverRecord {
  if (prev === undefined) return r;
  const m = { ...r };
  for (const k of ["containerName", "shadowContainerId", "shadowContainerName", "shadowImage", "jobId", "reason", "waitingForJob", "rollbackOf"] as const) if (m[k] === "") m[k] = prev[k];
  if (m.trigger === 0) m.trigger = prev.trigger;
  if (m.kind === 0) m.kind = prev.kind;
  if (m.mode === 0) m.mode = prev.mode;
  if (m.requestedAt === undefined && prev.requestedAt !== undefined) m.requestedAt = prev.requestedAt;
  return m;
}

export class SwitchoverStore extends EventEmitter<SwitchoverStoreEvents> implements SwitchoverRecordsView {
  private constructor(
    private readonly records: MessageStore<typeof SwitchoverRecordSchema>,
    private readonly max: number,
  ) {
    super();
    this.setMaxListeners(0);
  }

  static async open(db: Level<string, Uint8Array>, max = MAX_RECORDS): Promise<SwitchoverStore> {
    const records = await MessageStore.open(db, SwitchoverRecordSchema, { key: keys.switchover, range: keys.switchoverRange, id: (r) => r.id });
    return new SwitchoverStore(records, Math.max(1, max));
  }

  get size(): number {
    return this.records.size;
  }

  all(): SwitchoverRecord[] {
    return this.records.all();
  }

  get(id: string): SwitchoverRecord | undefined {
    return this.records.get(id);
  }

  /** Stores `r` (replacing the record of its id) and announces it; prunes past the bound. */
  async put(r: SwitchoverRecord): Promise<void> {
    await this.records.put(r);
    this.emit("upsert", r);
    // A tenth over the bound before pruning, so a full store does not sort on every write.
    if (this.records.size > this.max + Math.ceil(this.max / 10)) await this.prune();
  }

  private async prune(): Promise<void> {
    const finished = this.records.all().filter((r) => !isActive(r));
    finished.sort((a, b) => recordTime(a) - recordTime(b) || (a.id < b.id ? -1 : 1));
    for (const r of finished.slice(0, Math.max(0, this.records.size - this.max))) await this.records.delete(r.id);
  }
}
