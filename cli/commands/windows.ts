import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, filterOptions, type FilterFlags } from "../options.js";

export function registerWindows(program: Command): void {
  filterOptions(clientOptions(program.command("windows").description("telemetry windows of a time range, each layer's feature vector by name (export for `train`)")))
    .requiredOption("--since <time>", "windows that ended at or after this: a duration back from now (90s, 30m, 24h, 7d) or an ISO time")
    .option("--until <time>", "and before this (default: now)")
    .option("--json", "JSON lines, one window per line (what `train --from-file` reads)")
    .option("--array", "with --json: one JSON array instead of lines")
    .action(action(windows));
}

async function windows(o: FilterFlags & { since?: string; until?: string; array?: boolean }): Promise<void> {
  const { exportWindow, fetchWindows, parseTimeRange, renderWindows } = await runtime();
  const { since, until } = parseTimeRange(o);
  const progress = (n: number, last: Date | undefined) => process.stderr.write(`windows: ${n} read${last !== undefined ? ` (through ${last.toISOString()})` : ""}\n`);
  const windows = fetchWindows(o, { since, until, container: o.container, node: o.node }, progress);
  if (o.json) {
    let n = 0;
    if (o.array) process.stdout.write("[");
    for await (const w of windows) {
      const line = JSON.stringify(exportWindow(w.window, w.ctx));
      // Lines go out as they come: an export of millions of windows is never held whole.
      if (!process.stdout.write(o.array ? `${n === 0 ? "\n" : ",\n"}${line}` : `${line}\n`)) await new Promise((r) => process.stdout.once("drain", r));
      n++;
    }
    if (o.array) process.stdout.write(n === 0 ? "]\n" : "\n]\n");
    return;
  }
  const rows = [];
  for await (const w of windows) rows.push(w);
  out(rows.length === 0 ? `no windows ended between ${since.toISOString()} and ${until.toISOString()}` : renderWindows(rows));
}
