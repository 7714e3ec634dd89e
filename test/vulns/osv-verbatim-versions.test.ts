/**
 * OSV's `versions[]` is a list of exact strings ("v in affected.versions" in the schema's
 * evaluation): a listed version matches an installed package of exactly that version even when
 * the ecosystem's order cannot parse it, and an advisory keeps its list when one of its ranges
 * cannot be evaluated (the range alone is dropped). Through the real parser, feed manager (level
 * in a temporary directory) and matcher.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Level } from "level";
import { feedStatuses } from "../../aggregator/api/feed-statuses.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { parseOsvRecord } from "../../aggregator/feeds/parse/osv.js";
import { VulnIndex } from "../../aggregator/vulns/index.js";
import { matchInventory, type MatchProblems } from "../../aggregator/vulns/matcher.js";
import { silentLogger } from "../../common/log.js";
import { ImageInventorySchema, PackageSchema, type ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";

const LAYER = `sha256:${"1".repeat(64)}`;

function inventory(pkgs: Array<[type: string, name: string, version: string]>): ImageInventory {
  return create(ImageInventorySchema, {
    imageId: `sha256:${"a".repeat(64)}`,
    packages: pkgs.map(([type, name, version]) => create(PackageSchema, { type, name, version, layerId: LAYER })),
    layerIds: [LAYER],
  });
}

const record = (id: string, affected: unknown[]) => ({ schema_version: "1.6.0", id, modified: "2026-01-01T00:00:00Z", affected });

/** A PyPI advisory listing a legacy (pre-PEP 440) version, with a range whose fix PEP 440 cannot parse either. */
const LEGACY = record("PYSEC-2026-1", [
  {
    package: { ecosystem: "PyPI", name: "oldpkg" },
    ranges: [{ type: "ECOSYSTEM", events: [{ introduced: "0" }, { fixed: "2004d-final" }] }],
    versions: ["2004d", "1.0"],
  },
]);

/** Nothing left to match once its only range is dropped. */
const HOPELESS = record("GHSA-xxxx-yyyy-zzzz", [
  { package: { ecosystem: "npm", name: "left-pad" }, ranges: [{ type: "SEMVER", events: [{ introduced: "0" }, { fixed: "not a version" }] }] },
]);

function ids(index: VulnIndex, pkgs: Array<[string, string, string]>, problems?: MatchProblems): string[] {
  return matchInventory(index, inventory(pkgs), problems).map((m) => `${m.id} ${m.package}@${m.installedVersion}`);
}

describe("OSV versions[] as exact strings", () => {
  it("the matcher matches a listed version its ecosystem cannot parse", () => {
    const item = parseOsvRecord(record("PYSEC-2026-2", [{ package: { ecosystem: "PyPI", name: "oldpkg" }, versions: ["2004d"] }]));
    assert.ok(item.ok);
    const index = new VulnIndex();
    index.replaceOsvFeed("osv", new Map([[item.record.id, VulnIndex.compile(item.record)]]));
    const problems: MatchProblems = { unknownEcosystem: 0, unparseableVersion: 0, samples: [] };
    assert.deepEqual(ids(index, [["pypi", "oldpkg", "2004d"], ["pypi", "oldpkg", "2004e"]], problems), ["PYSEC-2026-2 oldpkg@2004d"]);
    assert.equal(problems.unparseableVersion, 2, "both versions are still reported as unparseable for the ranges");
  });

  it("the parser keeps an advisory's versions[] when one of its ranges cannot be evaluated", () => {
    const drops: Record<string, number> = {};
    const item = parseOsvRecord(LEGACY, (reason, n) => void (drops[reason] = (drops[reason] ?? 0) + n));
    assert.ok(item.ok, "kept");
    assert.deepEqual(item.record.affected[0]?.ranges, [], "the range with the unparseable fix is dropped");
    assert.deepEqual(item.record.affected[0]?.versions, ["2004d", "1.0"]);
    assert.deepEqual(drops, { "unparseable version": 1 });
    const hopeless = parseOsvRecord(HOPELESS);
    assert.ok(!hopeless.ok);
    assert.equal(hopeless.rejection.reason, "unparseable version");
    assert.match(hopeless.rejection.detail ?? "", /^npm left-pad: range 0: fixed "not a version" is not a valid semver version$/);
  });

  it("the feed manager stores the advisory and matches its listed versions, also after a restart", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sl-osv-verbatim-"));
    const db = new Level<string, Uint8Array>(join(dir, "db"), { keyEncoding: "utf8", valueEncoding: "view" });
    try {
      await mkdir(join(dir, "osv"));
      await writeFile(join(dir, "osv", "PYSEC-2026-1.json"), JSON.stringify(LEGACY));
      await writeFile(join(dir, "osv", "GHSA-xxxx-yyyy-zzzz.json"), JSON.stringify(HOPELESS));
      await db.open();
      const config = [{ name: "osv", kind: "osv" as const, source: join(dir, "osv") }];
      const feeds = await FeedManager.open(db, config, silentLogger());
      await feeds.refresh();
      const st = feedStatuses(feeds).find((f) => f.name === "osv");
      assert.equal(st?.records, 1n);
      assert.deepEqual(st?.rejectedByReason, { "unparseable version": 1n });
      const pkgs: Array<[string, string, string]> = [
        ["pypi", "oldpkg", "2004d"],
        ["pypi", "oldpkg", "1.0"],
        ["pypi", "oldpkg", "0.5"], // below the dropped range's fix: that range no longer says
      ];
      const want = ["PYSEC-2026-1 oldpkg@1.0", "PYSEC-2026-1 oldpkg@2004d"];
      assert.deepEqual(ids(feeds.index, pkgs).sort(), want);
      const reopened = await FeedManager.open(db, config, silentLogger());
      assert.deepEqual(ids(reopened.index, pkgs).sort(), want);
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
