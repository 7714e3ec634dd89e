import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type JsonFlags } from "../options.js";
import { safeLine } from "../terminal-safe.js";

export function registerWatch(program: Command): void {
  clientOptions(program.command("watch").description("follow graph changes as they happen (Ctrl-C stops)")).option("--json", "one JSON object per line").action(action(watch));
}

async function watch(o: JsonFlags): Promise<void> {
  const { GraphEvent_Type, QueryService, callServerStream, connect, follow, renderTree, toLdgJson } = await runtime();
  const c = await connect(o);
  const stream = callServerStream(c.client, QueryService.method.watchGraphs, {});
  stream.on("data", (ev) => {
    const type = GraphEvent_Type[ev.type]?.toLowerCase() ?? "unknown";
    if (o.json) out(JSON.stringify({ type, container_id: ev.containerId, ...(ev.graph ? { graph: toLdgJson(ev.graph) } : {}) }));
    else if (ev.type === GraphEvent_Type.UPSERT && ev.graph) out(renderTree(ev.graph));
    else if (ev.type === GraphEvent_Type.DELETE) out(safeLine`- ${ev.containerId.slice(0, 12)} removed`);
    else if (ev.type === GraphEvent_Type.SNAPSHOT_DONE) out("-- live --");
    else if (ev.type === GraphEvent_Type.RESYNC) out("-- fell behind: changes were dropped; every current graph follows --");
  });
  follow(c, stream);
}
