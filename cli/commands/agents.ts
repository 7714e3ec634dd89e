import type { Command } from "commander";
import { QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { action, out } from "../action.js";
import { query } from "../client.js";
import { clientOptions, type JsonFlags } from "../options.js";
import { agentJson, renderAgents } from "../telemetry-format.js";

export function registerAgents(program: Command): void {
  clientOptions(program.command("agents").description("agents, their exec-event source (eBPF or /proc polling), lost events, spool and node load")).option("--json", "JSON array").action(action(agents));
}

async function agents(o: JsonFlags): Promise<void> {
  const res = await query(o, QueryService.method.listAgents, {});
  out(o.json ? JSON.stringify(res.agents.map(agentJson), null, 2) : renderAgents(res.agents));
}
