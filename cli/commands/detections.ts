import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, filterOptions, type FilterFlags } from "../options.js";

export function registerDetections(program: Command): void {
  filterOptions(clientOptions(program.command("detections").description("runtime detections (drift: an executable not from any image layer was run)")))
    .option("--limit <n>", "the newest n (default: 100)")
    .option("--json", "JSON array").action(action(detections));
}

async function detections(o: FilterFlags & { limit?: string }): Promise<void> {
  const { QueryService, detectionJson, listAll, renderDetections, resolveLimit } = await runtime();
  const { items } = await listAll(o, QueryService.method.listDetections, { container: o.container ?? "", node: o.node ?? "", limit: resolveLimit(o) }, (p) => p.detections);
  out(o.json ? JSON.stringify(items.map(detectionJson), null, 2) : items.length === 0 ? "no detections" : renderDetections(items));
}
