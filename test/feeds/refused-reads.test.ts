/**
 * A read that keeps no record, or far fewer than the data in effect, is refused: after a good
 * load, each hostile source below leaves the good data in the index and in level (a restart loads
 * it again), and the feed's status says the read was refused and why. Real level in a temp dir,
 * real files.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { Level } from "level";
import { feedStatuses } from "../../aggregator/api/feed-statuses.js";
import type { FeedConfig } from "../../aggregator/feeds/feed-config.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { MAX_RECORD_BYTES } from "../../aggregator/feeds/parse/types.js";
import { silentLogger } from "../../common/log.js";
import { centralRecord, localHeader, yazlArchive } from "./decode/yazl-archive.js";

const osv = (id: string) =>
  JSON.stringify({
    schema_version: "1.6.0",
    id,
    modified: "2026-11-01T00:00:00Z",
    summary: `${id} in lodash`,
    affected: [{ package: { ecosystem: "npm", name: "lodash" }, ranges: [{ type: "SEMVER", events: [{ introduced: "0" }, { fixed: "4.17.21" }] }] }],
  });

const kevEntry = (cve: string) => ({
  cveID: cve,
  vendorProject: "v",
  product: "p",
  vulnerabilityName: "n",
  dateAdded: "2026-01-01",
  shortDescription: "d",
  requiredAction: "a",
  dueDate: "2026-02-01",
  knownRansomwareCampaignUse: "Unknown",
  notes: "",
  cwes: [],
});
const kev = (entries: unknown[]) => JSON.stringify({ title: "CISA Catalog of Known Exploited Vulnerabilities", catalogVersion: "2026.11.27", dateReleased: "2026-11-27T00:00:00.000Z", count: entries.length, vulnerabilities: entries });

const EPSS_HEAD = "#model_version:v2025.03.14,score_date:2026-11-27T00:00:00+0000\ncve,epss,percentile\n";
const epss = (cves: string[]) => EPSS_HEAD + cves.map((c) => `${c},0.5,0.9\n`).join("");

const cves = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `CVE-${prefix}-${String(1000 + i)}`);

/** An archive whose one entry claims 2 KiB and inflates past the per-record limit. */
async function zipBomb(): Promise<Buffer> {
  const zip = await yazlArchive([{ name: "GHSA-bomb.json", data: Buffer.alloc(MAX_RECORD_BYTES + 4096, 0x20) }]);
  zip.writeUInt32LE(2048, centralRecord(zip, "GHSA-bomb.json") + 24);
  zip.writeUInt32LE(2048, localHeader(zip, "GHSA-bomb.json") + 22);
  return zip;
}

describe("a read that keeps no record, or far fewer, is refused and the good data stays", () => {
  let dir: string;
  let db: Level<string, Uint8Array>;
  let feeds: FeedManager;
  let configs: FeedConfig[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-feeds-refused-"));
    await mkdir(join(dir, "osv-dir"));
    db = new Level<string, Uint8Array>(join(dir, "db"), { keyEncoding: "utf8", valueEncoding: "view" });
    await db.open();
    configs = [
      { name: "osv-zip", kind: "osv", source: join(dir, "all.zip") },
      { name: "osv-dir", kind: "osv", source: join(dir, "osv-dir") },
      { name: "kev", kind: "kev", source: join(dir, "kev.json") },
      { name: "epss", kind: "epss", source: join(dir, "epss.csv") },
    ];
    await writeFile(join(dir, "all.zip"), await yazlArchive(["GHSA-z1", "GHSA-z2", "GHSA-z3"].map((id) => ({ name: `${id}.json`, data: Buffer.from(osv(id)) }))));
    for (const id of ["GHSA-d1", "GHSA-d2", "GHSA-d3"]) await writeFile(join(dir, "osv-dir", `${id}.json`), osv(id));
    await writeFile(join(dir, "kev.json"), kev(cves("2024", 3).map(kevEntry)));
    // Gzipped or not, an EPSS file is recognised by its bytes.
    await writeFile(join(dir, "epss.csv"), gzipSync(epss(cves("2022", 10))));
    feeds = await FeedManager.open(db, configs, silentLogger());
    await feeds.refresh();
    for (const s of feedStatuses(feeds)) assert.equal(s.state, "ok", `${s.name}: ${s.error}`);
  });
  after(async () => {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  const status = (name: string) => {
    const s = feedStatuses(feeds).find((f) => f.name === name);
    assert.ok(s !== undefined);
    return s;
  };
  const osvIds = (m: FeedManager) =>
    m.index
      .lookup("npm", "", "lodash")
      .map((e) => e.id)
      .sort();

  /** The good data is still what a restarted aggregator loads from level. */
  const reopened = () => FeedManager.open(db, configs, silentLogger());

  it("an OSV zip bomb", async () => {
    await writeFile(join(dir, "all.zip"), await zipBomb());
    await feeds.refresh("osv-zip");
    const s = status("osv-zip");
    assert.equal(s.state, "error");
    assert.match(s.error, /refused: the source yielded no usable record, 0 accepted, 1 rejected \(too large: 1\); the previous 3 records are kept/);
    assert.equal(s.records, 3n);
    assert.deepEqual(osvIds(feeds), ["GHSA-d1", "GHSA-d2", "GHSA-d3", "GHSA-z1", "GHSA-z2", "GHSA-z3"]);
    assert.deepEqual(osvIds(await reopened()), ["GHSA-d1", "GHSA-d2", "GHSA-d3", "GHSA-z1", "GHSA-z2", "GHSA-z3"]);
  });

  it("an OSV source whose every record is rejected", async () => {
    for (const f of await readdir(join(dir, "osv-dir"))) await unlink(join(dir, "osv-dir", f));
    await writeFile(join(dir, "osv-dir", "a.json"), JSON.stringify({ id: 42, affected: "everything" }));
    await writeFile(join(dir, "osv-dir", "b.json"), "{ not json");
    await feeds.refresh("osv-dir");
    const s = status("osv-dir");
    assert.equal(s.state, "error");
    assert.match(s.error, /^refused: the source yielded no usable record, 0 accepted, 2 rejected \(.+\); the previous 3 records are kept$/);
    assert.equal(s.rejected, 2n, "the refused read's counts say why");
    assert.equal(s.records, 3n);
    assert.ok(osvIds(feeds).includes("GHSA-d1"));
    assert.ok(osvIds(await reopened()).includes("GHSA-d1"));
  });

  it("a KEV catalog with wrong types", async () => {
    const wrong = cves("2024", 3).map((c) => ({ ...kevEntry(c), cveID: 2024, dateAdded: true, knownRansomwareCampaignUse: ["Known"] }));
    await writeFile(join(dir, "kev.json"), kev(wrong));
    await feeds.refresh("kev");
    const s = status("kev");
    assert.equal(s.state, "error");
    assert.match(s.error, /^refused: the source yielded no usable record, 0 accepted, 3 rejected/);
    assert.equal(s.records, 3n);
    assert.deepEqual([...feeds.index.kev.keys()].sort(), cves("2024", 3));
    assert.deepEqual([...(await reopened()).index.kev.keys()].sort(), cves("2024", 3));
  });

  it("an EPSS gzip bomb", async () => {
    // 64 MiB of one line once inflated, about 64 KiB on disk.
    const bomb = gzipSync(Buffer.concat([Buffer.from(EPSS_HEAD), Buffer.alloc(64 * 1024 * 1024, 0x30)]), { level: 9 });
    assert.ok(bomb.length < 1024 * 1024);
    await writeFile(join(dir, "epss.csv"), bomb);
    await feeds.refresh("epss");
    const s = status("epss");
    assert.equal(s.state, "error");
    assert.match(s.error, /^refused: the source yielded no usable record, 0 accepted, 1 rejected \(too large: 1\)/);
    assert.equal(s.records, 10n);
    assert.equal(feeds.index.epss.get("CVE-2022-1000")?.epss, 0.5);
    assert.equal((await reopened()).index.epss.get("CVE-2022-1000")?.epss, 0.5);
  });

  it("an EPSS file of junk rows", async () => {
    const junk = Array.from({ length: 200 }, (_, i) => `row-${i},high,very\n`).join("");
    await writeFile(join(dir, "epss.csv"), EPSS_HEAD + junk);
    await feeds.refresh("epss");
    const s = status("epss");
    assert.equal(s.state, "error");
    assert.match(s.error, /^refused: the source yielded no usable record, 0 accepted, 200 rejected/);
    assert.equal(s.records, 10n);
    assert.equal(feeds.index.epss.get("CVE-2022-1009")?.percentile, 0.9);
    assert.equal((await reopened()).index.epss.size, 10);
  });

  it("a read of fewer than half the records in effect, unless the shrink is accepted", async () => {
    await writeFile(join(dir, "epss.csv"), epss(cves("2022", 4)));
    await feeds.refresh("epss");
    let s = status("epss");
    assert.equal(s.state, "error");
    assert.match(s.error, /^refused: 4 records, fewer than 50% of the current 10, 4 accepted, 0 rejected; the previous 10 records are kept$/);
    assert.equal(feeds.index.epss.size, 10);
    // The operator says the smaller source is right.
    await feeds.refresh("epss", { acceptShrink: true });
    s = status("epss");
    assert.equal(s.state, "ok");
    assert.equal(s.records, 4n);
    assert.equal(feeds.index.epss.size, 4);
    // A small move is an ordinary refresh: 4 → 2 is half, not fewer.
    await writeFile(join(dir, "epss.csv"), epss(cves("2022", 2)));
    await feeds.refresh("epss");
    assert.equal(status("epss").state, "ok");
    assert.equal(feeds.index.epss.size, 2);
  });

  it("the source back to good data is taken again", async () => {
    await writeFile(join(dir, "kev.json"), kev(cves("2025", 3).map(kevEntry)));
    await feeds.refresh("kev");
    const s = status("kev");
    assert.equal(s.state, "ok");
    assert.equal(s.error, "");
    assert.deepEqual([...feeds.index.kev.keys()].sort(), cves("2025", 3));
  });
});
