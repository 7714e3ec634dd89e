import type { Command } from "commander";
import { QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { action, out } from "../action.js";
import { query } from "../client.js";
import { renderTree, toLdgJson } from "../ldg-format.js";
import { containerCommand, type JsonFlags } from "../options.js";

export function registerGraph(program: Command): void {
  containerCommand(program, "graph", "print a container's Layer Dependency Graph").option("--json", "the seed-shaped LDG JSON").action(action(graph));
}

async function graph(container: string, o: JsonFlags): Promise<void> {
  const g = await query(o, QueryService.method.getLayerGraph, { container });
  out(o.json ? JSON.stringify(toLdgJson(g), null, 2) : renderTree(g));
}
