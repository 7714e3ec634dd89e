import type { Command } from "commander";
import type { SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { action, out, runtime } from "../action.js";
import { containerCommand, type JsonFlags } from "../options.js";

/** The aggregator waits up to 120 s for the agent, which answers once traffic has moved (and the replaced container has stopped). */
export const AGENT_ANSWER_MS = 150_000;

type SwitchoverFlags = JsonFlags & { reason?: string; mode?: string; rebuildIfMissing?: boolean; wait?: boolean };

/** `switchover <container>`: AdminService.Switchover (the admin certificate), then its progress to the end. */
export function registerSwitchover(program: Command): void {
  containerCommand(program, "switchover", "switch a container to its prepared shadow (the shadow starts, traffic moves, the original stops and is kept); needs the admin certificate")
    .option("--reason <text>", "why, kept with the record (default: asked for by an operator)")
    .option("--mode <mode>", "exclusive (the original stops before the shadow starts) or shared (the shadow starts first); default: exclusive when a writable volume or bind is mounted, else shared")
    .option("--rebuild-if-missing", "no shadow ready: rebuild one now and switch once it is ready and prepared (the wait is shown)")
    .option("--no-wait", "return once the agent took the command (or the wait began) instead of following it to its end")
    .option("--json", "the record as JSON (protobuf JSON form): as it ends, or as accepted with --no-wait")
    .addHelpText(
      "after",
      "\nThe container's shadow is the newest ready rebuild of its image that its node prepared (see `shadowlayer rebuilds`).\n" +
        "Exits non-zero when the switchover failed, was refused, or was rolled back (e.g. the shadow failed its health gate).\n" +
        "Follow it later with `shadowlayer history --container <c> --watch`; undo it with `shadowlayer rollback <c>`.",
    )
    .action(
      action(async (container: string, o: SwitchoverFlags) => {
        const r = await runtime();
        const f = await import("../switchover-format.js");
        const rec = await r.query(o, r.AdminService.method.switchover, { container, reason: o.reason ?? "", mode: f.parseMode(o.mode), rebuildIfMissing: o.rebuildIfMissing === true }, { deadlineMs: AGENT_ANSWER_MS });
        await report(o, rec);
      }),
    );
}

/** Prints a record an admin call returned and, unless --no-wait, follows it to its end; throws on a failed end. */
export async function report(o: JsonFlags & { wait?: boolean }, first: SwitchoverRecord): Promise<void> {
  const f = await import("../switchover-format.js");
  const end = o.wait === false || f.isFinal(first) ? first : await followRecord(o, first, (line) => (o.json ? undefined : out(line)));
  if (o.json) out(JSON.stringify(f.recordJson(end), null, 2));
  else {
    if (o.wait === false || f.isFinal(first)) for (const l of new f.ProgressLines().lines(first)) out(l);
    out(f.outcomeLine(end));
  }
  if (f.isFailure(end)) {
    const { Code, ShadowError } = await runtime();
    throw new ShadowError(Code.FailedPrecondition, `${f.kindLabel(end.kind)} ${end.id} ${f.outcomeLabel(end.outcome)}${end.error !== "" ? `: ${end.error}` : ""}`);
  }
}

/** Follows one record through WatchSwitchovers until it is final, printing its progress. */
async function followRecord(o: JsonFlags, first: SwitchoverRecord, print: (line: string) => void): Promise<SwitchoverRecord> {
  const r = await runtime();
  const f = await import("../switchover-format.js");
  const progress = new f.ProgressLines();
  for (const l of progress.lines(first)) print(l);
  const c = await r.connect(o);
  const stream = r.callServerStream(c.client, r.QueryService.method.watchSwitchovers, { container: first.containerId });
  return new Promise((resolve) => {
    stream.on("data", (ev) => {
      const rec = ev.record;
      if (rec === undefined || rec.id !== first.id) return;
      for (const l of progress.lines(rec)) print(l);
      if (!f.isFinal(rec)) return;
      stream.cancel();
      c.client.close();
      resolve(rec);
    });
    // A failed watch prints its sentence and exits; Ctrl-C stops following (the switchover goes on).
    r.follow(c, stream);
  });
}
