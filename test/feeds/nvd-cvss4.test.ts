/**
 * NVD pages with CVSS v4.0 metrics, in the shape the CVE API 2.0 publishes them: the v4.0 metric
 * chosen and scored from its vector, malformed ones dropped, and a v4.0-only CVE reaching the
 * index through the feed manager (also after a restart, from level).
 */
import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Level } from "level";
import { feedStatuses } from "../../aggregator/api/feed-statuses.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { parseNvd, type NvdRecord } from "../../aggregator/feeds/parse/nvd.js";
import { renderFeeds } from "../../cli/vulns-format.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";

const PAGE = join(PACKAGE_ROOT, "test", "fixtures", "feeds", "nvd", "cves-2.0-cvss4-page.json");

describe("NVD CVSS v4.0 metrics", () => {
  it("are chosen (Primary first), scored from their base vector, and dropped when malformed", async () => {
    const stream = parseNvd(createReadStream(PAGE, { highWaterMark: 777 }));
    const byId = new Map<string, NvdRecord>();
    for await (const item of stream) if (item.ok) byId.set(item.record.cve, item.record);
    assert.equal(stream.stats.accepted, 6);
    assert.deepEqual(stream.stats.dropped, { "invalid cvss vector": 2, "stated score contradicts vector": 1 });

    assert.deepEqual(byId.get("CVE-2025-1001")?.cvss40, {
      version: "4.0",
      vector: "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N",
      baseScore: 5.3,
      severity: "MEDIUM",
      source: "cna@vuldb.com",
      type: "Secondary",
    });
    assert.equal(byId.get("CVE-2025-1001")?.cvss31, undefined);

    const both = byId.get("CVE-2025-1002");
    assert.deepEqual([both?.cvss31?.baseScore, both?.cvss31?.source], [9.8, "nvd@nist.gov"], "v3.1 choice unchanged");
    assert.deepEqual([both?.cvss40?.baseScore, both?.cvss40?.severity], [9.3, "CRITICAL"]);

    assert.deepEqual([byId.get("CVE-2025-1003")?.cvss40?.source, byId.get("CVE-2025-1003")?.cvss40?.baseScore], ["nvd@nist.gov", 8.5]);
    assert.equal(byId.get("CVE-2025-1004")?.cvss40?.baseScore, 10, "E:U counts in CVSS-BT (9.1), not in the base score");
    assert.deepEqual([byId.get("CVE-2025-1005")?.cvss40?.baseScore, byId.get("CVE-2025-1005")?.cvss40?.severity], [9.3, "CRITICAL"], "the vector's score, not the published 6.0");
    assert.deepEqual(byId.get("CVE-2025-1005")?.cvss40?.rejected, { baseScore: 6, severity: "MEDIUM" });
    assert.equal(byId.get("CVE-2025-1006")?.cvss40, undefined);
    assert.ok(byId.has("CVE-2025-1006"), "the CVE stays without a score");
  });

  describe("through the feed manager", () => {
    let dir: string;
    let db: Level<string, Uint8Array>;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "sl-nvd4-"));
      db = new Level<string, Uint8Array>(join(dir, "db"), { keyEncoding: "utf8", valueEncoding: "view" });
      await db.open();
    });
    after(async () => {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    });

    it("index v3 where there is one, else v4.0, and keep them across a restart", async () => {
      const config = [{ name: "nvd", kind: "nvd" as const, source: PAGE }];
      const feeds = await FeedManager.open(db, config, silentLogger());
      await feeds.refresh();
      const check = (m: FeedManager) => {
        assert.deepEqual(m.index.nvd.get("CVE-2025-1001"), { vector: "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N", baseScore: 5.3 });
        assert.deepEqual(m.index.nvd.get("CVE-2025-1002"), { vector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", baseScore: 9.8 });
        assert.equal(m.index.nvd.get("CVE-2025-1006"), undefined);
        assert.equal(m.index.nvd.size, 5);
      };
      check(feeds);
      check(await FeedManager.open(db, config, silentLogger()));
      const [status] = feedStatuses(feeds);
      assert.deepEqual(status?.droppedByReason, { "invalid cvss vector": 2n, "stated score contradicts vector": 1n }, "the status says what was dropped");
      const table = renderFeeds(feedStatuses(feeds));
      assert.match(table, /dropped invalid cvss vector: 2/);
      assert.match(table, /dropped stated score contradicts vector: 1/);
    });
  });
});
