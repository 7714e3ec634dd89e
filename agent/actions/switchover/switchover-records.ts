/**
 * Every switchover and rollback this agent ran, in its state database (sublevel `switchovers`):
 * each record is written before a step acts and again when it is done, so after a crash the
 * agent knows how far it got (see switchover-recovery.ts). Finished records beyond a bound are
 * pruned, oldest first; unfinished ones are kept until recovery finishes them. It is the link's
 * record source: every change is emitted.
 */
import { EventEmitter } from "node:events";
import { clone, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import type Docker from "dockerode";
import { z } from "zod";
import { SwitchoverOutcome, SwitchoverRecordSchema, type SwitchoverRecord } from "../../../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { Logger } from "../../../common/log.js";
import type { StateSublevel } from "../../state/state-sublevel.js";
import type { SwitchoverRecordSource } from "./record-source.js";

/** Outcomes after which nothing more happens to a record. */
export function isFinished(r: SwitchoverRecord): boolean {
  return r.outcome !== SwitchoverOutcome.RUNNING && r.outcome !== SwitchoverOutcome.OBSERVING && r.outcome !== SwitchoverOutcome.WAITING;
}

const Stored = z.object({ record: z.json(), original: z.json().optional() });

interface Slot {
  key: string;
  record: SwitchoverRecord;
  /** The original's inspect data at the snapshot (to recreate it if it is removed). */
  original: Docker.ContainerInspectInfo | undefined;
}

const seqKey = (seq: number) => seq.toString(16).padStart(12, "0");

export class SwitchoverRecords extends EventEmitter<{ record: [SwitchoverRecord] }> implements SwitchoverRecordSource {
  private readonly slots = new Map<string, Slot>();
  private next = 1;
  private readonly maxFinished: number;

  /** `db`: a sublevel of the agent's state; without one records live in memory only. */
  constructor(
    private readonly db: StateSublevel<unknown> | undefined,
    private readonly log: Logger,
    /** Finished records kept: ~500 is months of switchovers on a node, well under a megabyte. */
    maxFinished = 500,
  ) {
    super();
    this.maxFinished = Math.max(1, maxFinished);
  }

  /** Reads what earlier runs stored (a damaged entry is skipped with a warning). */
  async load(): Promise<void> {
    if (this.db === undefined) return;
    for await (const [key, value] of this.db.iterator<string, string>({ valueEncoding: "utf8" })) {
      this.next = Math.max(this.next, Number.parseInt(key, 16) + 1);
      try {
        const s = Stored.parse(JSON.parse(value));
        const record = fromJson(SwitchoverRecordSchema, s.record as JsonValue);
        this.slots.set(record.id, { key, record, original: s.original as Docker.ContainerInspectInfo | undefined });
      } catch (err) {
        this.log.warn({ key, err: String(err) }, "unreadable switchover record skipped");
      }
    }
  }

  all(): SwitchoverRecord[] {
    return [...this.slots.values()].map((s) => clone(SwitchoverRecordSchema, s.record));
  }

  get(id: string): SwitchoverRecord | undefined {
    const r = this.slots.get(id)?.record;
    return r === undefined ? undefined : clone(SwitchoverRecordSchema, r);
  }

  original(id: string): Docker.ContainerInspectInfo | undefined {
    return this.slots.get(id)?.original;
  }

  /** Records still running or observing, oldest first (after a crash: what recovery finishes). */
  unfinished(): SwitchoverRecord[] {
    return this.all().filter((r) => !isFinished(r));
  }

  /** Stores (and emits) the record as it stands now; resolves once it is on disk. */
  async put(record: SwitchoverRecord, original?: Docker.ContainerInspectInfo): Promise<void> {
    const copy = clone(SwitchoverRecordSchema, record);
    const known = this.slots.get(copy.id);
    const slot: Slot = { key: known?.key ?? seqKey(this.next++), record: copy, original: original ?? known?.original };
    this.slots.set(copy.id, slot);
    const ops: Array<{ type: "put"; key: string; value: unknown } | { type: "del"; key: string }> = [
      { type: "put", key: slot.key, value: { record: toJson(SwitchoverRecordSchema, copy), ...(slot.original !== undefined ? { original: slot.original } : {}) } },
    ];
    let finished = [...this.slots.values()].filter((s) => isFinished(s.record)).length;
    for (const [id, s] of this.slots) {
      if (finished <= this.maxFinished) break;
      if (!isFinished(s.record)) continue;
      this.slots.delete(id);
      finished--;
      ops.push({ type: "del", key: s.key });
    }
    this.emit("record", clone(SwitchoverRecordSchema, copy));
    await this.db?.batch(ops);
  }
}
