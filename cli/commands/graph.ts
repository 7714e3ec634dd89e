import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { containerCommand, type JsonFlags } from "../options.js";

export function registerGraph(program: Command): void {
  containerCommand(program, "graph", "print a container's Layer Dependency Graph").option("--json", "the seed-shaped LDG JSON").action(action(graph));
}

async function graph(container: string, o: JsonFlags): Promise<void> {
  const { QueryService, query, renderTree, toLdgJson } = await runtime();
  const g = await query(o, QueryService.method.getLayerGraph, { container });
  out(o.json ? JSON.stringify(toLdgJson(g), null, 2) : renderTree(g));
}
