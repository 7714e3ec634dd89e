import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type JsonFlags } from "../options.js";

/** `history`: every switchover and rollback, newest first; `--watch` follows them. */
export function registerHistory(program: Command): void {
  clientOptions(program.command("history").description("switchovers and rollbacks, newest first: trigger, reason, each step's duration, the switch time and the outcome"))
    .option("--container <ref>", "only this container's (the original or its shadow: id, prefix of 12+ hex digits, or name)")
    .option("--watch", "follow changes: every record, then each change (Ctrl-C stops)")
    .option("--json", "JSON array (protobuf JSON form; with --watch: one event per line)")
    .addHelpText(
      "after",
      "\nColumns: TIME asked for (UTC); CONTAINER original → shadow (a rollback: shadow → original); KIND switchover | rollback;\n" +
        "TRIGGER proactive | drift | falco | manual | automatic | recovery; OUTCOME waiting (job) | running | observing | succeeded |\n" +
        "rolled-back | failed | refused; SWITCH from the command reaching the agent to the shadow taking new connections;\n" +
        "STEPS each step and its duration; REASON why (with the error of a failed one). --json has every field whole.",
    )
    .action(action(history));
}

async function history(o: JsonFlags & { container?: string; watch?: boolean }): Promise<void> {
  const r = await runtime();
  const f = await import("../switchover-format.js");
  if (o.watch) {
    const c = await r.connect(o);
    const stream = r.callServerStream(c.client, r.QueryService.method.watchSwitchovers, { container: o.container ?? "" });
    stream.on("data", (ev) => {
      if (o.json) out(JSON.stringify(f.switchoverEventJson(ev)));
      else if (ev.record !== undefined) out(f.renderHistory([ev.record]).split("\n")[1] ?? "");
    });
    r.follow(c, stream);
    return;
  }
  const { items } = await r.listAll(o, r.QueryService.method.listSwitchovers, { container: o.container ?? "" }, (p) => p.records);
  out(o.json ? JSON.stringify(items.map(f.recordJson), null, 2) : items.length === 0 ? "no switchovers yet" : f.renderHistory(items));
}
