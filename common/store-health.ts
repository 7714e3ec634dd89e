/**
 * Whether a level store can write, and the way back when it cannot. LevelDB answers a write that hit
 * a full or failing disk with an IO error; when the failure struck a background compaction it
 * keeps answering every later write with that error, even once space is back, until the database
 * is reopened. So the first storage error marks the store failing (why, and since when): writes
 * are refused at once with that reason (not tried: nothing lands behind a torn log record), reads
 * go on, and a recovery with backoff waits for space, reopens and probes before writes resume.
 */
import { EventEmitter } from "node:events";
import { Backoff } from "./backoff.js";
import { Code, errnoCode, ShadowError } from "./errors.js";
import type { Logger } from "./log.js";

export interface StoreFailure {
  /** The storage error, as level or the file system said it. */
  error: string;
  since: Date;
}

export interface StoreRecoveryOptions {
  /** What the store is, in messages ("the store", "the agent's state"). */
  name?: string;
  /** First wait before trying to recover (default 1 s); doubles up to `maxMs`. */
  minMs?: number;
  /** Longest wait between tries (default 30 s). */
  maxMs?: number;
}

export interface StoreHealthEvents {
  failing: [StoreFailure];
  recovered: [StoreFailure];
}

/** Errnos of a disk that cannot take a write: full, over quota, read-only, failing. */
const STORAGE_ERRNOS = new Set(["ENOSPC", "EDQUOT", "EROFS", "EIO"]);

/** True for an error of the disk under the store (level's IO errors, also as the cause of a failed open). */
export function isStorageError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const code = errnoCode(e);
    if (code === "LEVEL_IO_ERROR" || (code !== undefined && STORAGE_ERRNOS.has(code))) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export class StoreHealth extends EventEmitter<StoreHealthEvents> {
  private failure: StoreFailure | undefined;
  private readonly backoff: Backoff;
  private timer: NodeJS.Timeout | undefined;
  private attempt: Promise<void> | undefined;
  private stopped = false;
  private refused = 0;
  private readonly name: string;

  constructor(
    /** Makes the store write again (wait for space, reopen, probe); throws while it cannot. */
    private readonly recover: () => Promise<void>,
    private readonly log: Logger,
    o: StoreRecoveryOptions = {},
  ) {
    super();
    this.name = o.name ?? "the store";
    this.backoff = new Backoff(o.minMs ?? 1000, o.maxMs ?? 30_000);
  }

  /** Why the store cannot write, or undefined while it can. */
  get failing(): StoreFailure | undefined {
    return this.failure;
  }

  /** Writes refused or failed for want of storage since the store was opened. */
  get refusedWrites(): number {
    return this.refused;
  }

  /** Runs one write: refused while failing; a storage error marks the store failing. */
  async write<T>(op: () => Promise<T>): Promise<T> {
    if (this.failure !== undefined) throw this.refusal(this.failure);
    try {
      return await op();
    } catch (err) {
      if (!isStorageError(err)) throw err;
      throw this.refusal(this.fail(err), err);
    }
  }

  /** What a refused write gets: UNAVAILABLE at the gRPC edge, so callers retry later. */
  private refusal(f: StoreFailure, cause?: unknown): ShadowError {
    this.refused++;
    return new ShadowError(Code.StorageFailing, `${this.name} cannot write (failing since ${f.since.toISOString()}: ${f.error}); writes resume once it recovers`, { cause });
  }

  private fail(err: unknown): StoreFailure {
    if (this.failure !== undefined) return this.failure;
    const f: StoreFailure = { error: err instanceof Error ? err.message : String(err), since: new Date() };
    this.failure = f;
    this.log.error({ err: f.error }, `${this.name} cannot write: refusing writes, serving reads, and retrying with backoff`);
    this.emit("failing", f);
    this.backoff.reset();
    this.schedule();
    return f;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.attempt = this.tryRecover().finally(() => (this.attempt = undefined));
    }, this.backoff.next());
    this.timer.unref();
  }

  private async tryRecover(): Promise<void> {
    const f = this.failure;
    if (f === undefined || this.stopped) return;
    try {
      await this.recover();
    } catch (err) {
      this.log.debug({ err: err instanceof Error ? err.message : String(err) }, `${this.name} not writable yet`);
      this.schedule();
      return;
    }
    this.failure = undefined;
    this.log.info({ since: f.since.toISOString(), err: f.error, refusedWrites: this.refused }, `${this.name} writes again`);
    this.emit("recovered", f);
  }

  /** Stops recovering (before the database closes for good), waiting for a try under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.attempt;
  }
}
