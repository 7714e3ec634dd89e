/**
 * The agent's one level database (`<data-dir>/agent-<node>/state`), with a sublevel per part:
 * the telemetry spool, the inventory cache, the command journal and the switchover records. One database means one lock,
 * one open and one close (first up, last down), and writes across parts could share a batch.
 * On a full disk its writes are refused (and counted) while the agent works on, and it recovers
 * by itself once space is back (common/recoverable-level.ts).
 */
import { dirname, join } from "node:path";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { openPrivateLevel, privateDir } from "../../common/private-files.js";
import { RecoverableLevel } from "../../common/recoverable-level.js";
import type { StoreHealth, StoreRecoveryOptions } from "../../common/store-health.js";
import type { Service } from "../service-runner.js";
import { upgradeLegacyLayout } from "./legacy-layout.js";
import type { StateSublevel } from "./state-sublevel.js";

export class AgentState implements Service {
  readonly name = "state";
  private readonly db: RecoverableLevel;
  /** Telemetry waiting for the aggregator (see link/spool.ts). */
  readonly spool: StateSublevel<Uint8Array>;
  /** Package inventories already read, by image (see inventory/scanner.ts). */
  readonly inventory: StateSublevel<Uint8Array>;
  /** Commands received and their results (see actions/command-journal.ts). */
  readonly commands: StateSublevel<unknown>;
  /** Switchover and rollback records, each step journaled (see actions/switchover/switchover-records.ts). */
  readonly switchovers: StateSublevel<unknown>;

  /** `dir` is the agent's own directory, `<data-dir>/agent-<node>`; `recovery` paces retries after a storage error. */
  constructor(
    readonly dir: string,
    private readonly log: Logger,
    recovery: StoreRecoveryOptions = {},
  ) {
    this.db = new RecoverableLevel(join(dir, "state"), log, { name: "the agent's state", ...recovery });
    this.spool = this.db.keepOpen(this.db.sublevel<string, Uint8Array>("spool", { valueEncoding: "view" }));
    this.inventory = this.db.keepOpen(this.db.sublevel<string, Uint8Array>("inventory", { valueEncoding: "view" }));
    this.commands = this.db.keepOpen(this.db.sublevel<string, unknown>("commands", { valueEncoding: "json" }));
    this.switchovers = this.db.keepOpen(this.db.sublevel<string, unknown>("switchovers", { valueEncoding: "json" }));
  }

  /** Whether the state can write; `refusedWrites` counts what it could not keep (spool items among them). */
  get health(): StoreHealth {
    return this.db.health;
  }

  /**
   * Opens the database, private to this user (the data dir and `dir` 0700 too), then carries over
   * what an earlier version's layout left in `dir`.
   */
  async start(): Promise<void> {
    await privateDir(dirname(this.dir), this.log);
    await privateDir(this.dir, this.log);
    await openPrivateLevel(this.db.location, this.log, () =>
      this.db.open().catch((err: unknown) => {
        throw new ShadowError(Code.FailedPrecondition, `cannot open the agent's state in ${this.db.location} (is another agent using it?)`, { cause: err });
      }),
    );
    try {
      await upgradeLegacyLayout(this.dir, this.spool, this.log);
    } catch (err) {
      await this.db.close();
      throw err;
    }
  }

  async stop(): Promise<void> {
    await this.db.health.stop();
    await this.db.close();
  }
}
