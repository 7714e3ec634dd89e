/**
 * Runs one feed refresh in a process of its own, so that a test can kill it mid-ingest:
 * `node ingest-child.js DB_DIR NAME KIND SOURCE`. Prints "refreshing" once the feeds are open and
 * "done" when the refresh ended.
 */
import { Level } from "level";
import type { FeedKind } from "../../aggregator/feeds/feed-config.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { silentLogger } from "../../common/log.js";

const [dbDir, name, kind, source] = process.argv.slice(2);
if (dbDir === undefined || name === undefined || kind === undefined || source === undefined) throw new Error("usage: ingest-child DB_DIR NAME KIND SOURCE");
const db = new Level<string, Uint8Array>(dbDir, { keyEncoding: "utf8", valueEncoding: "view" });
await db.open();
const feeds = await FeedManager.open(db, [{ name, kind: kind as FeedKind, source }], silentLogger());
process.stdout.write("refreshing\n");
await feeds.refresh(name);
process.stdout.write("done\n");
await db.close();
