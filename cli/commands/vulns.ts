import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { containerCommand, type JsonFlags } from "../options.js";
import { safeLine } from "../terminal-safe.js";

export function registerVulns(program: Command): void {
  containerCommand(program, "vulns", "a container's vulnerabilities: package, layer, fix, CVSS, EPSS, KEV and each one's threat").option("--json", "JSON with the inventory's status (scanned, partial or pending), the scores and every match").action(action(vulns));
}

async function vulns(container: string, o: JsonFlags): Promise<void> {
  const { QueryService, inventoryLine, listAll, renderVulns, vulnsJson } = await runtime();
  const { first, items: matches } = await listAll(o, QueryService.method.getVulns, { container }, (p) => p.matches);
  // Pages come by advisory id; the most threatening first, as the aggregator ranks them.
  matches.sort((a, b) => b.threat - a.threat || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const r = { ...first, matches };
  if (o.json) {
    out(JSON.stringify(vulnsJson(r), null, 2));
    return;
  }
  const s = r.scores;
  if (s !== undefined) out(safeLine`${s.containerName || s.containerId.slice(0, 12)}: risk ${s.risk.toFixed(1)}, threat ${s.threat.toFixed(1)}, ${r.matches.length} vulnerabilities in ${r.packages} packages${r.os ? ` (${r.os.id} ${r.os.versionId})` : ""}; policy ${s.policy?.name} rebuild at ${s.policy?.rebuildThreshold}, switch at ${s.policy?.switchThreshold}`);
  out(safeLine`${inventoryLine(r)}`);
  for (const c of s?.caveats ?? []) out(safeLine`  note: ${c}`);
  if (r.matches.length > 0) out(renderVulns(r.matches));
}
