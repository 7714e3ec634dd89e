/**
 * Every command passes through this journal: it is written (state "accepted") before its handler
 * runs and its result after (state "finished"). A repeated id, also after an agent restart, gets
 * the first answer without running the handler again. A command accepted but never finished (the
 * agent died while it ran) is listed by `unfinished()`, for a recovery step to resume or roll back
 * and then record with `finish()`; a repeat of it waits for that answer.
 */
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { z } from "zod";
import { CommandResultSchema, CommandSchema, CommandStatus, type Command, type CommandResult } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { Service } from "../service-runner.js";
import type { StateSublevel } from "../state/state-sublevel.js";
import { unimplemented, type CommandHandler, type CommandOutcome, type ModelUpdateHandler } from "./command-handler.js";

export type JournalState = "accepted" | "finished";

export interface JournalEntry {
  readonly id: string;
  /** The proto's oneof case ("prepareShadow", "switchover", "rollback"), "" for an empty command. */
  readonly action: string;
  readonly container: string;
  readonly receivedAt: Date;
  readonly state: JournalState;
  /** The whole command, so a recovery step can resume it. */
  readonly command: Command;
  readonly result?: CommandResult;
  readonly finishedAt?: Date;
}

export interface CommandJournalOptions {
  log: Logger;
  /**
   * Finished entries kept (default 1,000; the oldest go first). The aggregator repeats an id
   * only when it re-sends one decision (a timeout, a reconnect, its own restart), minutes after
   * the first; commands are a few per risky container, so 1,000 answers span days on a busy node
   * while the journal stays well under a megabyte and loads in milliseconds at start. Unfinished
   * entries are never pruned: they wait for recovery.
   */
  maxFinished?: number;
  /** How long stop() waits for running commands (default 30 s). */
  stopDeadlineMs?: number;
  /** Who takes ModelUpdate (the anomaly scorer); answered UNIMPLEMENTED without one. */
  modelUpdate?: ModelUpdateHandler;
}

/** The stored form of an entry (JSON in the sublevel), checked when read back. */
const StoredEntry = z.object({
  id: z.string().min(1),
  action: z.string(),
  container: z.string(),
  receivedAt: z.iso.datetime(),
  state: z.enum(["accepted", "finished"]),
  command: z.json(),
  result: z.json().optional(),
  finishedAt: z.iso.datetime().optional(),
});
type StoredEntry = z.infer<typeof StoredEntry>;

const seqKey = (seq: number) => seq.toString(16).padStart(12, "0");

export class CommandJournal implements Service {
  /** Entries by id, in the order received (the order of their keys). */
  private readonly entries = new Map<string, { key: string; entry: JournalEntry }>();
  private readonly running = new Map<string, Promise<CommandResult>>();
  private readonly waiting = new Map<string, Array<(r: CommandResult) => void>>();
  private readonly writes = new Set<Promise<unknown>>();
  private next = 1;
  private finishedCount = 0;
  private closed = false;
  private readonly maxFinished: number;

  readonly name = "commands";

  /** `db`: an open sublevel of the agent's state; without one the journal lives in memory only. */
  constructor(
    private readonly db: StateSublevel<unknown> | undefined,
    private readonly handler: CommandHandler,
    private readonly o: CommandJournalOptions,
  ) {
    this.maxFinished = Math.max(1, o.maxFinished ?? 1000);
  }

  /** Loads what an earlier run journaled; before `run`. */
  async start(): Promise<void> {
    if (this.db === undefined) return;
    // Read as text and parsed here, so one damaged entry is skipped rather than stopping the agent.
    for await (const [key, value] of this.db.iterator<string, string>({ valueEncoding: "utf8" })) {
      this.next = Math.max(this.next, Number.parseInt(key, 16) + 1);
      let entry: JournalEntry;
      try {
        entry = fromStored(StoredEntry.parse(JSON.parse(value)));
      } catch (err) {
        this.o.log.warn({ key, err: String(err) }, "unreadable command journal entry skipped");
        continue;
      }
      this.entries.set(entry.id, { key, entry });
      if (entry.state === "finished") this.finishedCount++;
    }
    for (const e of this.unfinished()) {
      this.o.log.warn({ command: e.id, action: e.action, container: e.container, receivedAt: e.receivedAt }, "command interrupted by the agent's last stop; waiting for recovery");
    }
  }

  /** Answers a command: the stored result for a known id, else the handler's, journaled around it. Never rejects. */
  run(cmd: Command): Promise<CommandResult> {
    if (cmd.id === "") return Promise.resolve(result(cmd.id, { status: CommandStatus.REJECTED, message: "command without id" }));
    const running = this.running.get(cmd.id);
    if (running !== undefined) return running;
    const known = this.entries.get(cmd.id)?.entry;
    if (known?.result !== undefined) {
      this.o.log.debug({ command: cmd.id, action: known.action, container: known.container }, "repeated command answered from the journal");
      return Promise.resolve(known.result);
    }
    if (known !== undefined) return new Promise((r) => this.waiting.set(cmd.id, [...(this.waiting.get(cmd.id) ?? []), r]));
    if (this.closed) return Promise.resolve(result(cmd.id, { status: CommandStatus.FAILED, message: "the agent is stopping" }));
    const p = this.execute(cmd).finally(() => this.running.delete(cmd.id));
    this.running.set(cmd.id, p);
    return p;
  }

  /** Commands accepted by an earlier run of the agent that never finished, oldest first. */
  unfinished(): JournalEntry[] {
    return [...this.entries.values()].map((e) => e.entry).filter((e) => e.state === "accepted" && !this.running.has(e.id));
  }

  /** Records the outcome of an unfinished command (after recovery resumed or rolled it back). */
  async finish(id: string, outcome: CommandOutcome): Promise<CommandResult> {
    const known = this.entries.get(id)?.entry;
    if (known === undefined || known.state !== "accepted" || this.running.has(id)) {
      throw new ShadowError(Code.FailedPrecondition, `command ${id} is not an unfinished entry of the journal`);
    }
    return this.record(known, outcome);
  }

  /** The entry for an id, if the journal still holds it. */
  entry(id: string): JournalEntry | undefined {
    return this.entries.get(id)?.entry;
  }

  /**
   * Waits for the commands running now and their journal writes, up to `deadlineMs` (default
   * 30 s: a switchover's health gate and drain fit); a command still running then stays
   * "accepted" and the next start's recovery finishes it. The database is closed by its owner.
   */
  async stop(deadlineMs = this.o.stopDeadlineMs ?? 30_000): Promise<void> {
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), deadlineMs)));
    const all = Promise.allSettled([...this.running.values()]).then(() => Promise.allSettled([...this.writes]));
    if ((await Promise.race([all, deadline])) === "late") this.o.log.warn({ running: [...this.running.keys()] }, "commands still running at the stop deadline; recovery finishes them at the next start");
    clearTimeout(timer);
  }

  private async execute(cmd: Command): Promise<CommandResult> {
    const entry: JournalEntry = {
      id: cmd.id,
      action: cmd.action.case ?? "",
      container: cmd.action.case === "modelUpdate" ? cmd.action.value.imageId : (cmd.action.value?.containerId ?? ""),
      receivedAt: new Date(),
      state: "accepted",
      command: withoutArtifact(cmd),
    };
    const key = seqKey(this.next++);
    const log = this.o.log.child({ command: cmd.id, action: entry.action, container: entry.container });
    try {
      await this.write(this.db?.put(key, toStored(entry)));
    } catch (err) {
      // Not journaled means not done: a repeat of the id tries again.
      log.warn({ err: String(err) }, "cannot journal the command; not run");
      return result(cmd.id, { status: CommandStatus.FAILED, message: `cannot journal the command: ${String(err)}` });
    }
    this.entries.set(cmd.id, { key, entry });
    let outcome: CommandOutcome;
    try {
      outcome = await this.dispatch(cmd);
    } catch (err) {
      outcome = { status: CommandStatus.FAILED, message: `${entry.action} failed: ${err instanceof Error ? err.message : String(err)}` };
    }
    log.info({ status: CommandStatus[outcome.status] }, "command done");
    return this.record(entry, outcome);
  }

  private dispatch(cmd: Command): Promise<CommandOutcome> {
    switch (cmd.action.case) {
      case "prepareShadow":
        return this.handler.prepareShadow(cmd.action.value, cmd.id);
      case "switchover":
        return this.handler.switchover(cmd.action.value, cmd.id);
      case "rollback":
        return this.handler.rollback(cmd.action.value, cmd.id);
      case "modelUpdate":
        return this.o.modelUpdate?.(cmd.action.value, cmd.id) ?? Promise.resolve(unimplemented("modelUpdate"));
      default:
        return Promise.resolve(unimplemented(cmd.action.case));
    }
  }

  /** Stores the result with the entry, prunes the oldest finished entries beyond the bound, wakes repeats. */
  private async record(accepted: JournalEntry, outcome: CommandOutcome): Promise<CommandResult> {
    const r = result(accepted.id, outcome);
    const slot = this.entries.get(accepted.id);
    const key = slot?.key ?? seqKey(this.next++);
    const entry: JournalEntry = { ...accepted, state: "finished", result: r, finishedAt: new Date() };
    this.entries.set(entry.id, { key, entry });
    this.finishedCount++;
    const ops: Array<{ type: "put"; key: string; value: StoredEntry } | { type: "del"; key: string }> = [{ type: "put", key, value: toStored(entry) }];
    for (const [id, e] of this.entries) {
      if (this.finishedCount <= this.maxFinished) break;
      if (e.entry.state !== "finished") continue;
      this.entries.delete(id);
      this.finishedCount--;
      ops.push({ type: "del", key: e.key });
    }
    try {
      await this.write(this.db?.batch(ops));
    } catch (err) {
      // The command acted; only its record is missing. After a restart it shows as unfinished.
      this.o.log.warn({ command: entry.id, action: entry.action, container: entry.container, err: String(err) }, "cannot journal the command's result");
    }
    for (const w of this.waiting.get(entry.id) ?? []) w(r);
    this.waiting.delete(entry.id);
    return r;
  }

  private async write(p: Promise<void> | undefined): Promise<void> {
    if (p === undefined) return;
    this.writes.add(p);
    try {
      await p;
    } finally {
      this.writes.delete(p);
    }
  }
}

function result(id: string, o: CommandOutcome): CommandResult {
  return create(CommandResultSchema, {
    commandId: id,
    status: o.status,
    message: o.message,
    shadowContainerId: o.shadowContainerId ?? "",
    ...(o.switchover !== undefined ? { switchover: o.switchover } : {}),
  });
}

/** A ModelUpdate's artifact (up to 4 MiB) is not journaled: the model directory keeps the model. */
function withoutArtifact(cmd: Command): Command {
  if (cmd.action.case !== "modelUpdate") return cmd;
  return create(CommandSchema, { id: cmd.id, action: { case: "modelUpdate", value: { ...cmd.action.value, artifact: new Uint8Array() } } });
}

function toStored(e: JournalEntry): StoredEntry {
  return {
    id: e.id,
    action: e.action,
    container: e.container,
    receivedAt: e.receivedAt.toISOString(),
    state: e.state,
    command: toJson(CommandSchema, e.command),
    ...(e.result !== undefined ? { result: toJson(CommandResultSchema, e.result) } : {}),
    ...(e.finishedAt !== undefined ? { finishedAt: e.finishedAt.toISOString() } : {}),
  };
}

function fromStored(r: StoredEntry): JournalEntry {
  return {
    id: r.id,
    action: r.action,
    container: r.container,
    receivedAt: new Date(r.receivedAt),
    state: r.state,
    command: fromJson(CommandSchema, r.command as JsonValue),
    ...(r.result !== undefined ? { result: fromJson(CommandResultSchema, r.result as JsonValue) } : {}),
    ...(r.finishedAt !== undefined ? { finishedAt: new Date(r.finishedAt) } : {}),
  };
}
