import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type JsonFlags } from "../options.js";

export function registerAgents(program: Command): void {
  clientOptions(program.command("agents").description("agents, their exec-event source (eBPF or /proc polling), lost events, spool and node load")).option("--json", "JSON array").action(action(agents));
}

async function agents(o: JsonFlags): Promise<void> {
  const { QueryService, agentJson, listAll, renderAgents } = await runtime();
  const { items: agents } = await listAll(o, QueryService.method.listAgents, {}, (p) => p.agents);
  out(o.json ? JSON.stringify(agents.map(agentJson), null, 2) : renderAgents(agents));
}
