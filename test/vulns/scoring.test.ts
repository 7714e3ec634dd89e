/**
 * Threat and risk: the formulas of aggregator/vulns/SCORING.md, the matcher on inventories
 * (Debian source packages, releases, withdrawn advisories), and KEV/EPSS changing scores with
 * their reasons.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { OsvRecord } from "../../aggregator/feeds/parse/osv.js";
import { VulnIndex } from "../../aggregator/vulns/index.js";
import { matchInventory, type MatchProblems } from "../../aggregator/vulns/matcher.js";
import { aggregateThreat, driftScore, exploitFactor, riskScore, vulnThreat } from "../../aggregator/vulns/scoring.js";
import { ImageInventorySchema, OsReleaseSchema, PackageSchema, type ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";

describe("threat of one vulnerability", () => {
  it("KEV dominates, then EPSS, and a fix makes it more urgent", () => {
    const base = { id: "x", cvss: 9.8, epss: 0.01, kev: false, kevRansomware: false, fixAvailable: true };
    assert.equal(exploitFactor({ epss: 0, kev: false, kevRansomware: false }), 0.1);
    assert.ok(vulnThreat({ ...base, kev: true }) > vulnThreat({ ...base, epss: 0.9 }));
    assert.ok(vulnThreat({ ...base, kev: true, kevRansomware: true }) > vulnThreat({ ...base, kev: true }));
    assert.ok(vulnThreat({ ...base, epss: 0.9 }) > vulnThreat(base));
    assert.ok(vulnThreat(base) > vulnThreat({ ...base, fixAvailable: false }));
    assert.equal(vulnThreat({ ...base, cvss: undefined }), vulnThreat({ ...base, cvss: 5.0 }), "unknown CVSS counts as 5.0");
    assert.ok(Math.abs(vulnThreat({ ...base, kev: true }) - 0.882) < 1e-9);
  });
});

describe("threat of a layer", () => {
  const critKev = vulnThreat({ id: "c", cvss: 9.8, epss: 0.97, kev: true, kevRansomware: false, fixAvailable: true });
  const medium = vulnThreat({ id: "m", cvss: 5.5, epss: 0.01, kev: false, kevRansomware: false, fixAvailable: true });
  it("no number of mediums outranks one exploited critical", () => {
    const one = aggregateThreat([critKev]);
    for (const n of [1, 10, 100, 10_000]) assert.ok(aggregateThreat(Array(n).fill(medium)) < one, `${n} mediums`);
    // Even mediums with a high EPSS stay below.
    const hot = vulnThreat({ id: "h", cvss: 6.5, epss: 0.95, kev: false, kevRansomware: false, fixAvailable: true });
    assert.ok(aggregateThreat(Array(1000).fill(hot)) < one);
  });
  it("more vulnerabilities never lower it, and it stays within 0-100", () => {
    let prev = 0;
    for (let n = 1; n < 50; n++) {
      const t = aggregateThreat(Array(n).fill(medium));
      assert.ok(t >= prev && t <= 100);
      prev = t;
    }
    assert.equal(aggregateThreat([]), 0);
    assert.equal(aggregateThreat([1, 1, 1]), 100);
  });
});

describe("risk", () => {
  it("combines threat and drift as independent chances; drift fades with time", () => {
    const now = new Date("2026-11-27T12:00:00Z");
    assert.equal(driftScore(undefined, now), 0);
    assert.equal(driftScore(new Date(now.getTime() - 60_000), now), 80);
    assert.equal(driftScore(new Date(now.getTime() - 5 * 3_600_000), now), 50);
    assert.equal(driftScore(new Date(now.getTime() - 3 * 86_400_000), now), 0);
    assert.equal(riskScore(0, undefined, 0), 0);
    assert.equal(riskScore(50, undefined, 80), 90);
    assert.equal(riskScore(100, 0, 0), 100);
  });
});

function rec(id: string, ecosystem: string, name: string, events: Array<Record<string, string>>, extra: Partial<OsvRecord> = {}): OsvRecord {
  return {
    id,
    modified: "2026-01-01T00:00:00Z",
    aliases: [],
    severity: [],
    affected: [{ ecosystem, name, ranges: [{ type: "ECOSYSTEM", events }], versions: [] }],
    ...extra,
  } as OsvRecord;
}

function inventory(os: { id: string; versionId: string } | undefined, pkgs: Array<{ type: string; name: string; version: string; sourceName?: string; sourceVersion?: string; layerId?: string }>): ImageInventory {
  return create(ImageInventorySchema, {
    imageId: `sha256:${"1".repeat(64)}`,
    ...(os !== undefined ? { os: create(OsReleaseSchema, os) } : {}),
    packages: pkgs.map((p) => create(PackageSchema, { layerId: "sha256:layer", path: "/x", ...p })),
  });
}

function index(records: OsvRecord[]): VulnIndex {
  const ix = new VulnIndex();
  ix.replaceOsvFeed("osv", new Map(records.map((r) => [r.id, VulnIndex.compile(r)])));
  return ix;
}

describe("matching inventories", () => {
  it("Debian advisories name the source package: a binary package matches through its source", () => {
    const ix = index([rec("DSA-1", "Debian:12", "openssl", [{ introduced: "0" }, { fixed: "3.0.11-1~deb12u2" }], { aliases: ["CVE-2023-5678"] })]);
    const vulnerable = inventory({ id: "debian", versionId: "12" }, [{ type: "deb", name: "libssl3", version: "3.0.9-1", sourceName: "openssl", sourceVersion: "3.0.9-1" }]);
    const fixed = inventory({ id: "debian", versionId: "12" }, [{ type: "deb", name: "libssl3", version: "3.0.11-1~deb12u2", sourceName: "openssl", sourceVersion: "3.0.11-1~deb12u2" }]);
    const m = matchInventory(ix, vulnerable);
    assert.equal(m.length, 1);
    assert.equal(m[0]?.package, "libssl3");
    assert.equal(m[0]?.advisoryPackage, "openssl");
    assert.equal(m[0]?.fixedVersion, "3.0.11-1~deb12u2");
    assert.equal(matchInventory(ix, fixed).length, 0);
    // Another Debian release is another ecosystem.
    assert.equal(matchInventory(ix, inventory({ id: "debian", versionId: "11" }, [{ type: "deb", name: "libssl3", version: "3.0.9-1", sourceName: "openssl" }])).length, 0);
  });

  it("withdrawn advisories never match; unknown distributions and bad versions are counted", () => {
    const ix = index([rec("GHSA-w", "npm", "lodash", [{ introduced: "0" }, { fixed: "4.17.21" }], { withdrawn: "2026-01-02T00:00:00Z" }), rec("GHSA-l", "npm", "lodash", [{ introduced: "0" }, { fixed: "4.17.21" }])]);
    const problems: MatchProblems = { unknownEcosystem: 0, unparseableVersion: 0, samples: [] };
    const m = matchInventory(
      ix,
      inventory(undefined, [
        { type: "npm", name: "lodash", version: "4.17.20" },
        { type: "npm", name: "lodash", version: "not-a-version" },
        { type: "deb", name: "libc6", version: "2.36-9" },
      ]),
      problems,
    );
    assert.deepEqual(m.map((x) => x.id), ["GHSA-l"]);
    assert.equal(problems.unknownEcosystem, 1);
    assert.equal(problems.unparseableVersion, 1);
  });

  it("KEV and EPSS change a match's threat, and say so", () => {
    const ix = index([rec("CVE-2021-44228", "PyPI", "Some_Pkg", [{ introduced: "1.0" }, { fixed: "2.0" }], { severity: [{ type: "CVSS_V3", score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H" }] } as Partial<OsvRecord>)]);
    const inv = inventory(undefined, [{ type: "pypi", name: "some-pkg", version: "1.5" }]);
    const before = matchInventory(ix, inv)[0];
    assert.equal(before?.cvss, 10);
    assert.equal(before?.cvssSource, "osv");
    assert.equal(before?.hasEpss, false);
    ix.setEpss(new Map([["CVE-2021-44228", { epss: 0.97, percentile: 0.999 }]]));
    const withEpss = matchInventory(ix, inv)[0];
    assert.ok((withEpss?.threat ?? 0) > (before?.threat ?? 1));
    assert.equal(withEpss?.epss, 0.97);
    ix.setKev(new Map([["CVE-2021-44228", { dateAdded: "2021-12-10", ransomware: true }]]));
    const withKev = matchInventory(ix, inv)[0];
    assert.equal(withKev?.kevRansomware, true);
    assert.equal(withKev?.threat, 1);
    ix.setNvd(new Map([["CVE-2021-44228", { vector: "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H", baseScore: 8.1 }]]));
    assert.equal(matchInventory(ix, inv)[0]?.cvssSource, "nvd");
    assert.equal(matchInventory(ix, inv)[0]?.cvss, 8.1);
  });

  it("severity: NVD's v3, else the advisory's v3 vector, else NVD's v4.0, else 5.0 assumed", () => {
    const v4 = { vector: "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N", baseScore: 5.3 };
    const osvV3 = { severity: [{ type: "CVSS_V3", score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" }] } as Partial<OsvRecord>;
    const inv = inventory(undefined, [{ type: "npm", name: "lodash", version: "4.17.20" }]);
    const advisory = (extra: Partial<OsvRecord>) => rec("GHSA-x", "npm", "lodash", [{ introduced: "0" }, { fixed: "4.17.21" }], { aliases: ["CVE-2025-1001", "CVE-2025-1002"], ...extra });
    const first = (ix: VulnIndex) => {
      const m = matchInventory(ix, inv)[0];
      return [m?.cvss, m?.cvssSource, m?.cvssVector];
    };

    const none = index([advisory({})]);
    assert.deepEqual(first(none), [0, "default", ""]);
    none.setNvd(new Map([["CVE-2025-1001", v4]]));
    assert.deepEqual(first(none), [5.3, "nvd", v4.vector], "v4.0 where nothing else scores it");

    const withOsv = index([advisory(osvV3)]);
    withOsv.setNvd(new Map([["CVE-2025-1001", v4]]));
    assert.deepEqual(first(withOsv), [9.8, "osv", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"], "a v3 vector outranks NVD's v4.0");

    // NVD's v3 on a later alias still wins over a v4.0 on an earlier one.
    withOsv.setNvd(new Map([["CVE-2025-1001", v4], ["CVE-2025-1002", { vector: "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H", baseScore: 8.1 }]]));
    assert.deepEqual(first(withOsv), [8.1, "nvd", "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"]);
  });
});
