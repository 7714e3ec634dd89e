import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, filterOptions, type FilterFlags } from "../options.js";

export function registerScores(program: Command): void {
  filterOptions(clientOptions(program.command("scores").description("per-container and per-layer risk (threat, drift, anomaly) against each environment's policy, riskiest first")))
    .option("--watch", "follow changes (Ctrl-C stops)")
    .option("--json", "JSON (with --watch: one object per change)").action(action(scores));
}

async function scores(o: FilterFlags & { watch?: boolean }): Promise<void> {
  const { QueryService, callServerStream, connect, follow, listAll, renderScores, scoresJson } = await runtime();
  if (o.watch) {
    const c = await connect(o);
    const stream = callServerStream(c.client, QueryService.method.watchScores, { node: o.node ?? "" });
    stream.on("data", (ev) => {
      if (ev.scores === undefined) return;
      out(o.json ? JSON.stringify(scoresJson(ev.scores)) : renderScores([ev.scores]).split("\n")[1] ?? "");
    });
    follow(c, stream);
    return;
  }
  const { items } = await listAll(o, QueryService.method.listScores, { container: o.container ?? "", node: o.node ?? "" }, (p) => p.containers);
  // Pages come by container id; people read the riskiest first.
  items.sort((a, b) => b.risk - a.risk || a.containerName.localeCompare(b.containerName) || (a.containerId < b.containerId ? -1 : 1));
  out(o.json ? JSON.stringify(items.map(scoresJson), null, 2) : items.length === 0 ? "no containers scored yet" : renderScores(items));
}
