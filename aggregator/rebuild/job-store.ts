/**
 * Rebuild jobs in level (`rebuild!<id>`, protobuf binary), all of them in memory too: level is
 * the truth, read back on open so a restarted aggregator resumes its queue. Writes are made in
 * the order they were asked (one chain), so a job's last state is the one on disk; many jobs
 * planned at once go in one batch.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Level } from "level";
import { RebuildJobSchema, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { keys } from "../store/keys.js";

export class JobStore {
  private readonly byId = new Map<string, RebuildJob>();
  private chain: Promise<void> = Promise.resolve();

  private constructor(private readonly db: Level<string, Uint8Array>) {}

  static async open(db: Level<string, Uint8Array>): Promise<JobStore> {
    const s = new JobStore(db);
    for await (const v of db.values(keys.rebuildRange)) {
      const j = fromBinary(RebuildJobSchema, v);
      s.byId.set(j.id, j);
    }
    return s;
  }

  get size(): number {
    return this.byId.size;
  }

  get(id: string): RebuildJob | undefined {
    return this.byId.get(id);
  }

  all(): IterableIterator<RebuildJob> {
    return this.byId.values();
  }

  /** Stores the jobs (new or changed) and removes `drop`, in one batch after every earlier write. */
  write(put: readonly RebuildJob[], drop: readonly string[] = []): Promise<void> {
    for (const j of put) this.byId.set(j.id, j);
    for (const id of drop) this.byId.delete(id);
    const ops = [
      ...put.map((j) => ({ type: "put" as const, key: keys.rebuild(j.id), value: toBinary(RebuildJobSchema, j) })),
      ...drop.map((id) => ({ type: "del" as const, key: keys.rebuild(id) })),
    ];
    const p = this.chain.then(() => (ops.length === 0 ? undefined : this.db.batch(ops)));
    // A failed write does not stop later ones; its caller hears of it.
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Resolves once every write asked so far is done. */
  idle(): Promise<void> {
    return this.chain;
  }
}
