import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type JsonFlags } from "../options.js";

export function registerContainers(program: Command): void {
  clientOptions(program.command("containers").alias("ps").description("list the containers the aggregator knows"))
    .option("--node <name>", "only this node")
    .option("--json", "JSON array")
    .action(action(containers));
}

async function containers(o: JsonFlags & { node?: string }): Promise<void> {
  const { QueryService, containerJson, listAll, renderContainers } = await runtime();
  const { items } = await listAll(o, QueryService.method.listContainers, { node: o.node ?? "" }, (p) => p.containers);
  out(o.json ? JSON.stringify(items.map(containerJson), null, 2) : renderContainers(items));
}
