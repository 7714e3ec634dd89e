/**
 * A level database (the aggregator's store, the agent's state) whose every write (put, del, batch,
 * clear, chained batch, also through sublevels) goes through its health, and which recovers in
 * place: the same object is closed and reopened, so every module holding it keeps working, and
 * the sublevels given to `keepOpen` are reopened with it. A reopen closes level's open iterators,
 * so a level read racing it (milliseconds, once per recovery) fails and its caller retries;
 * answers kept in memory are not touched.
 *
 * The hooks are abstract-level's implementation API (`_put`, `_del`, `_batch`, `_clear`,
 * `_chainedBatch`), reached below every public method, so nothing can write around them.
 */
import { open as openFile, readdir, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Level } from "level";
import type { Logger } from "./log.js";
import { StoreHealth, type StoreRecoveryOptions } from "./store-health.js";

/** The part of classic-level's implementation API this class wraps. */
interface LevelInternals {
  _put(key: unknown, value: unknown, options: unknown): Promise<void>;
  _del(key: unknown, options: unknown): Promise<void>;
  _batch(operations: unknown, options: unknown): Promise<void>;
  _clear(options: unknown): Promise<void>;
  _chainedBatch(): { _write(options: unknown): Promise<void> };
}

const base = Level.prototype as unknown as LevelInternals;

/** Written and deleted after a reopen to prove writes work (outside every range the programs use). */
const PROBE_KEY = "~store-probe";
const PROBE_OPTIONS = { keyEncoding: "utf8", valueEncoding: "view" };
/** A file beside level's own (level ignores names it did not make), to test for space first. */
const SPACE_PROBE = "space-probe";
/** Space asked for on top of the write-ahead logs, which a reopen writes out as a table. */
const SPACE_MARGIN = 1 << 20;

/** A sublevel, as far as a reopen is concerned. */
interface Reopenable {
  open(): Promise<void>;
}

export class RecoverableLevel extends Level<string, Uint8Array> {
  readonly health: StoreHealth;
  private readonly sublevels: Reopenable[] = [];

  constructor(location: string, log: Logger, recovery: StoreRecoveryOptions = {}) {
    super(location, { keyEncoding: "utf8", valueEncoding: "view" });
    this.health = new StoreHealth(() => this.reopen(), log.child({ component: "store-health" }), recovery);
  }

  /** Has `sub` (a sublevel of this database) reopened with it; a closing database closes its sublevels. */
  keepOpen<T extends Reopenable>(sub: T): T {
    this.sublevels.push(sub);
    return sub;
  }

  async _put(key: unknown, value: unknown, options: unknown): Promise<void> {
    return this.health.write(() => base._put.call(this, key, value, options));
  }

  async _del(key: unknown, options: unknown): Promise<void> {
    return this.health.write(() => base._del.call(this, key, options));
  }

  async _batch(operations: unknown, options: unknown): Promise<void> {
    return this.health.write(() => base._batch.call(this, operations, options));
  }

  async _clear(options: unknown): Promise<void> {
    return this.health.write(() => base._clear.call(this, options));
  }

  _chainedBatch(): { _write(options: unknown): Promise<void> } {
    const batch = base._chainedBatch.call(this);
    const write = batch._write.bind(batch);
    batch._write = (options) => this.health.write(() => write(options));
    return batch;
  }

  /**
   * Makes a failing store write again, or throws: there must be room for the reopen (the logs
   * become a table), level is reopened behind this same handle (which clears LevelDB's sticky
   * background error and starts a fresh log), and a probe key is written and deleted.
   */
  private async reopen(): Promise<void> {
    await this.probeSpace();
    if (this.status === "open") await this.close();
    await this.open();
    for (const sub of this.sublevels) await sub.open();
    await base._put.call(this, PROBE_KEY, new Uint8Array(1), PROBE_OPTIONS);
    await base._del.call(this, PROBE_KEY, PROBE_OPTIONS);
  }

  /** Writes (then removes) a file as large as the reopen needs; ENOSPC while the disk is still full. */
  private async probeSpace(): Promise<void> {
    let need = SPACE_MARGIN;
    for (const name of await readdir(this.location)) {
      if (name.endsWith(".log")) need += (await stat(join(this.location, name)).catch(() => ({ size: 0 }))).size;
    }
    const path = join(this.location, SPACE_PROBE);
    const fh = await openFile(path, "w", 0o600);
    try {
      const chunk = new Uint8Array(Math.min(need, 1 << 16));
      for (let left = need; left > 0; left -= chunk.length) await fh.write(chunk, 0, Math.min(left, chunk.length));
      await fh.sync();
    } finally {
      await fh.close();
      await unlink(path);
    }
  }
}
