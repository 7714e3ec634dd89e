/**
 * An ingest killed with SIGKILL leaves no trace: its records never become visible, not after a
 * restart, not after a later refresh and another restart, and its chunks are gone from level.
 * The ingest runs in a child process reading a loopback HTTP source that stops sending halfway;
 * the child is killed once level's log holds some of its chunks.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { Level } from "level";
import { ChunkWriter } from "../../aggregator/feeds/chunk-store.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { keys } from "../../aggregator/store/keys.js";
import { silentLogger } from "../../common/log.js";

const HEAD = "#model_version:v2025.03.14,score_date:2026-11-27T00:00:00+0000\ncve,epss,percentile\n";
const rows = (year: number, n: number) => Array.from({ length: n }, (_, i) => `CVE-${year}-${String(10000 + i)},0.5,0.9\n`).join("");
const CHILD = fileURLToPath(new URL("./ingest-child.js", import.meta.url));

/** Whether a level write-ahead log in `dir` holds `key` (written there as it is put). */
async function logHolds(dir: string, key: string): Promise<boolean> {
  for (const f of await readdir(dir)) {
    if (f.endsWith(".log") && (await readFile(join(dir, f))).includes(key)) return true;
  }
  return false;
}

describe("a killed ingest", () => {
  let dir: string;
  let server: Server;
  let source: string;
  /** What the source serves next: a whole body, or the start of one that never ends. */
  let serve: (res: ServerResponse) => void;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-feeds-killed-"));
    server = createServer((_req, res) => serve(res));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    source = `http://127.0.0.1:${(server.address() as AddressInfo).port}/epss.csv`;
  });
  after(async () => {
    server.closeAllConnections();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const config = () => [{ name: "epss", kind: "epss" as const, source }];
  const withFeeds = async <T>(fn: (feeds: FeedManager, db: Level<string, Uint8Array>) => Promise<T>): Promise<T> => {
    const db = new Level<string, Uint8Array>(join(dir, "db"), { keyEncoding: "utf8", valueEncoding: "view" });
    await db.open();
    try {
      return await fn(await FeedManager.open(db, config(), silentLogger()), db);
    } finally {
      await db.close();
    }
  };
  const years = (feeds: FeedManager) => new Set([...feeds.index.epss.keys()].map((c) => c.split("-")[1]));

  it("leaves no record and no key behind, after a restart and a later refresh", async () => {
    serve = (res) => res.end(HEAD + rows(2001, 10));
    await withFeeds(async (feeds) => {
      await feeds.refresh();
      assert.equal(feeds.states()[0]?.meta.state, "ok");
      assert.equal(feeds.index.epss.size, 10);
    });

    // 20,000 rows (40 chunks) of another year, then the source stalls: the child is mid-ingest.
    serve = (res) => {
      res.writeHead(200, { "content-type": "text/csv" });
      res.write(HEAD + rows(2099, 20_000));
    };
    const child = spawn(process.execPath, [CHILD, join(dir, "db"), "epss", "epss", source], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    const exited = once(child, "exit");
    const deadline = Date.now() + 60_000;
    // The child's generation is the one after the good one (2 for every scheme of ids so far);
    // its eighth chunk in the log means a batch of chunks is stored.
    while (!(await logHolds(join(dir, "db"), keys.feedChunk("epss", 2, 7)))) {
      assert.ok(Date.now() < deadline, `no chunk written by the child (its output: ${JSON.stringify(out)})`);
      assert.equal(child.exitCode, null, `the child ended early (its output: ${JSON.stringify(out)})`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    const [, signal] = await exited;
    assert.equal(signal, "SIGKILL");
    assert.equal(out, "refreshing\n", "killed mid-ingest, before the refresh ended");

    // Restart: the good data, nothing of the killed ingest, and its chunks removed.
    await withFeeds(async (feeds, db) => {
      assert.deepEqual(years(feeds), new Set(["2001"]));
      const meta = feeds.states()[0]?.meta;
      assert.equal(meta?.gen, 1);
      assert.deepEqual(await chunkKeysOutside(db, 1), []);
      // A later refresh of a smaller source (fewer chunks than the killed ingest wrote).
      serve = (res) => res.end(HEAD + rows(2002, 10));
      await feeds.refresh();
      assert.equal(feeds.states()[0]?.meta.state, "ok", feeds.states()[0]?.meta.error);
      assert.deepEqual(years(feeds), new Set(["2002"]));
    });

    // Restart again: exactly the later refresh's records, from its generation's chunks only.
    await withFeeds(async (feeds, db) => {
      assert.equal(feeds.index.epss.size, 10);
      assert.deepEqual(years(feeds), new Set(["2002"]));
      const gen = feeds.states()[0]?.meta.gen ?? 0;
      assert.ok(gen > 2, `the later refresh took a fresh generation id, not the killed one's (${gen})`);
      assert.deepEqual(await chunkKeysOutside(db, gen), []);
      assert.deepEqual(await db.keys(keys.feedGeneration("epss", gen)).all(), [keys.feedChunk("epss", gen, 0)]);
    });
  });
});

describe("a data directory written before generation ids were reserved", () => {
  it("keeps its current generation and loses the half one a crash left", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sl-feeds-upgrade-"));
    const db = new Level<string, Uint8Array>(join(dir, "db"), { keyEncoding: "utf8", valueEncoding: "view" });
    await db.open();
    try {
      const chunk = (year: number, n: number) => {
        const w = new ChunkWriter();
        for (let i = 0; i < n; i++) w.addRecord({ cve: `CVE-${year}-${String(10000 + i)}`, epss: 0.5, percentile: 0.9 });
        return w.take();
      };
      // The meta as it was written then (no reserved id), generation 1 current, and generation 2
      // half written by an ingest that was killed.
      const meta = { gen: 1, etag: "", lastModified: "", fileStamp: "", lastAttempt: "2026-11-01T00:00:00.000Z", lastSuccess: "2026-11-01T00:00:00.000Z", lastChange: "2026-11-01T00:00:00.000Z", state: "ok", error: "", accepted: 3, rejected: 0, reasons: {}, samples: [], records: 3 };
      await db.put(keys.feedMeta("epss"), new TextEncoder().encode(JSON.stringify(meta)));
      await db.put(keys.feedChunk("epss", 1, 0), chunk(2001, 3));
      await db.put(keys.feedChunk("epss", 2, 0), chunk(2099, 500));
      await db.put(keys.feedChunk("epss", 2, 1), chunk(2098, 500));
      const feeds = await FeedManager.open(db, [{ name: "epss", kind: "epss", source: join(dir, "none.csv") }], silentLogger());
      assert.deepEqual([...feeds.index.epss.keys()].sort(), ["CVE-2001-10000", "CVE-2001-10001", "CVE-2001-10002"]);
      assert.deepEqual(await chunkKeysOutside(db, 1), []);
      assert.deepEqual(await db.keys(keys.feedGeneration("epss", 1)).all(), [keys.feedChunk("epss", 1, 0)]);
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** The feed's chunk keys that are not the current generation's. */
async function chunkKeysOutside(db: Level<string, Uint8Array>, gen: number): Promise<string[]> {
  const current = keys.feedGeneration("epss", gen);
  const all = await db.keys({ gt: "feed!epss!", lt: "feed!epss!\xff" }).all();
  return all.filter((k) => k !== keys.feedMeta("epss") && !(k > current.gt && k < current.lt));
}
