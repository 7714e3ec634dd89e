import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type JsonFlags } from "../options.js";
import { Code, ShadowError } from "../../common/errors.js";

export function registerFeeds(program: Command): void {
  clientOptions(program.command("feeds").description("vulnerability feeds: source, last refresh, records accepted and rejected (and why), staleness"))
    .option("--refresh [name]", "refresh now (all feeds, or the one named) and show the result; needs the admin certificate")
    .option("--accept-shrink", "with --refresh: take a read that keeps fewer than half of the records in effect (the feed really shrank; otherwise such a read is refused and the current data stays)")
    .option("--json", "JSON array")
    .action(action(feeds));
}

async function feeds(o: JsonFlags & { refresh?: string | boolean; acceptShrink?: boolean }): Promise<void> {
  if (o.acceptShrink === true && o.refresh === undefined) throw new ShadowError(Code.InvalidArgument, "--accept-shrink: only with --refresh");
  const { AdminService, QueryService, feedJson, listAll, query, renderFeeds } = await runtime();
  const list =
    o.refresh !== undefined
      ? (await query(o, AdminService.method.refreshFeeds, { name: typeof o.refresh === "string" ? o.refresh : "", acceptShrink: o.acceptShrink === true }, { deadlineMs: 600_000 })).feeds
      : (await listAll(o, QueryService.method.listFeeds, {}, (p) => p.feeds)).items;
  out(o.json ? JSON.stringify(list.map(feedJson), null, 2) : renderFeeds(list));
}
