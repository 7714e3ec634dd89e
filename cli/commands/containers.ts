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
  const { QueryService, containerJson, query, renderContainers } = await runtime();
  const res = await query(o, QueryService.method.listContainers, { node: o.node ?? "" });
  out(o.json ? JSON.stringify(res.containers.map(containerJson), null, 2) : renderContainers(res.containers));
}
