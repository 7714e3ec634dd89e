import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type JsonFlags } from "../options.js";

export function registerFeeds(program: Command): void {
  clientOptions(program.command("feeds").description("vulnerability feeds: source, last refresh, records accepted and rejected (and why), staleness"))
    .option("--refresh [name]", "refresh now (all feeds, or the one named) and show the result; needs the admin certificate")
    .option("--json", "JSON array")
    .action(action(feeds));
}

async function feeds(o: JsonFlags & { refresh?: string | boolean }): Promise<void> {
  const { AdminService, QueryService, feedJson, query, renderFeeds } = await runtime();
  const res =
    o.refresh !== undefined
      ? await query(o, AdminService.method.refreshFeeds, { name: typeof o.refresh === "string" ? o.refresh : "" }, { deadlineMs: 600_000 })
      : await query(o, QueryService.method.listFeeds, {});
  out(o.json ? JSON.stringify(res.feeds.map(feedJson), null, 2) : renderFeeds(res.feeds));
}
