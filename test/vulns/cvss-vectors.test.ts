/**
 * CVSS vectors from feeds are held to their specification's grammar, and a score a feed states
 * beside a vector is checked against the score the vector gives: NVD's metrics (v3.0, v3.1, v4.0)
 * and OSV's CVSS_V3 / CVSS_V4 severities. A bad metric is dropped and counted; the record stays.
 */
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { parseNvd, type NvdRecord } from "../../aggregator/feeds/parse/nvd.js";
import { parseOsvRecord } from "../../aggregator/feeds/parse/osv.js";
import { cvss31BaseScore, cvss40BaseScore } from "../../aggregator/vulns/cvss.js";

const V31 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"; // 9.8
const V40 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"; // 9.3

/** Vectors that break the v3.x grammar, each with what is wrong. */
const BAD_V3: Array<[string, string]> = [
  ["CVSS:3.1/AV:Q/AC:Z/PR:N/UI:N/S:U/C:H/I:H/A:H", "unknown values"],
  ["CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "AV:Q"],
  ["CVSS:3.1/AV:N/AC:Z/PR:N/UI:N/S:U/C:H/I:H/A:H", "AC:Z"],
  ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H", "A missing"],
  ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/AV:L", "AV repeated"],
  ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/XX:H", "unknown metric"],
  ["CVSS:3.2/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "wrong prefix"],
  ["cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "prefix is case-sensitive"],
  ["AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "no prefix"],
  [` ${V31}`, "leading space"],
  [`${V31} `, "trailing space"],
  ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H//", "empty metric"],
];

/** Vectors that break the v4.0 grammar. */
const BAD_V4: Array<[string, string]> = [
  ["CVSS:4.0/AV:Q/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", "AV:Q"],
  ["CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N", "SA missing"],
  [`${V40}/E:A/E:P`, "E repeated"],
  [`${V40}/XX:H`, "unknown metric"],
  ["CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/SC:N/VI:H/SI:N/VA:H/SA:N", "out of Table 23's order"],
  [`${V40}/CR:H/E:A`, "threat after environmental"],
  [`${V40}/U:red`, "values are case-sensitive"],
  [` ${V40}`, "leading space"],
];

function nvdPage(metrics: Array<{ cve: string; key: string; version: string; vector: string; score: number; severity: string }>): Readable {
  const vulnerabilities = metrics.map((m) => ({
    cve: {
      id: m.cve,
      published: "2026-01-01T00:00:00.000",
      lastModified: "2026-01-02T00:00:00.000",
      vulnStatus: "Analyzed",
      metrics: {
        [m.key]: [
          {
            source: "nvd@nist.gov",
            type: "Primary",
            cvssData: { version: m.version, vectorString: m.vector, baseScore: m.score, baseSeverity: m.severity },
          },
        ],
      },
    },
  }));
  const page = { resultsPerPage: vulnerabilities.length, startIndex: 0, totalResults: vulnerabilities.length, format: "NVD_CVE", version: "2.0", vulnerabilities };
  return Readable.from([Buffer.from(JSON.stringify(page))]);
}

async function parsed(input: Readable): Promise<{ byId: Map<string, NvdRecord>; dropped: Record<string, number> }> {
  const stream = parseNvd(input);
  const byId = new Map<string, NvdRecord>();
  for await (const item of stream) if (item.ok) byId.set(item.record.cve, item.record);
  return { byId, dropped: stream.stats.dropped };
}

describe("CVSS vectors from feeds", () => {
  it("the scorers refuse every vector outside the grammar", () => {
    for (const [v, why] of BAD_V3) assert.equal(cvss31BaseScore(v), undefined, why);
    for (const [v, why] of BAD_V4) assert.equal(cvss40BaseScore(v), undefined, why);
    // v3.x allows any order (v3.1 §6), v4.0 only Table 23's (v4.0 §7).
    assert.equal(cvss31BaseScore("CVSS:3.1/A:H/I:H/C:H/S:U/UI:N/PR:N/AC:L/AV:N")?.score, 9.8);
    assert.equal(cvss40BaseScore(`${V40}/E:A/CR:H/MAV:L/S:P/U:Red`)?.score, 9.3);
  });

  it("NVD: a metric whose vector breaks the grammar is dropped and counted; the CVE stays", async () => {
    const metrics = [
      ...BAD_V3.map(([vector], i) => ({ cve: `CVE-2026-${1000 + i}`, key: "cvssMetricV31", version: "3.1", vector, score: 9.8, severity: "CRITICAL" })),
      ...BAD_V4.map(([vector], i) => ({ cve: `CVE-2026-${2000 + i}`, key: "cvssMetricV40", version: "4.0", vector, score: 9.3, severity: "CRITICAL" })),
      // A v3.0 vector filed as v3.1: its prefix is wrong for the metric.
      { cve: "CVE-2026-3000", key: "cvssMetricV31", version: "3.1", vector: V31.replace("3.1", "3.0"), score: 9.8, severity: "CRITICAL" },
    ];
    const { byId, dropped } = await parsed(nvdPage(metrics));
    assert.equal(byId.size, metrics.length, "every CVE is kept");
    for (const m of metrics) {
      const r = byId.get(m.cve);
      assert.equal(r?.cvss31 ?? r?.cvss40, undefined, `${m.cve} ${m.vector}`);
    }
    assert.deepEqual(dropped, { "invalid cvss vector": metrics.length });
  });

  it("NVD: a 9.8 vector stated as 0.1 is scored 9.8, and the stated score is recorded as rejected", async () => {
    const { byId, dropped } = await parsed(
      nvdPage([
        { cve: "CVE-2026-0001", key: "cvssMetricV31", version: "3.1", vector: V31, score: 0.1, severity: "LOW" },
        { cve: "CVE-2026-0002", key: "cvssMetricV30", version: "3.0", vector: V31.replace("3.1", "3.0"), score: 9.8, severity: "CRITICAL" },
        // Within one rounding step: v3.0 scorers rounded up in floating point.
        { cve: "CVE-2026-0003", key: "cvssMetricV30", version: "3.0", vector: V31.replace("3.1", "3.0"), score: 9.9, severity: "CRITICAL" },
        // The right score with a severity outside its band.
        { cve: "CVE-2026-0004", key: "cvssMetricV31", version: "3.1", vector: V31, score: 9.8, severity: "LOW" },
        { cve: "CVE-2026-0005", key: "cvssMetricV40", version: "4.0", vector: V40, score: 0.1, severity: "LOW" },
        // A CNA's v4.0 vector with a threat metric states the CVSS-BT score (9.1 with E:U): no contradiction.
        { cve: "CVE-2026-0006", key: "cvssMetricV40", version: "4.0", vector: "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/E:U", score: 9.1, severity: "CRITICAL" },
      ]),
    );
    assert.deepEqual(byId.get("CVE-2026-0001")?.cvss31, {
      version: "3.1",
      vector: V31,
      baseScore: 9.8,
      severity: "CRITICAL",
      source: "nvd@nist.gov",
      type: "Primary",
      rejected: { baseScore: 0.1, severity: "LOW" },
    });
    assert.deepEqual([byId.get("CVE-2026-0002")?.cvss31?.baseScore, byId.get("CVE-2026-0002")?.cvss31?.rejected], [9.8, undefined]);
    assert.deepEqual([byId.get("CVE-2026-0003")?.cvss31?.baseScore, byId.get("CVE-2026-0003")?.cvss31?.rejected], [9.8, undefined]);
    assert.deepEqual(byId.get("CVE-2026-0004")?.cvss31?.rejected, { baseScore: 9.8, severity: "LOW" });
    assert.deepEqual([byId.get("CVE-2026-0005")?.cvss40?.baseScore, byId.get("CVE-2026-0005")?.cvss40?.rejected], [9.3, { baseScore: 0.1, severity: "LOW" }]);
    assert.deepEqual([byId.get("CVE-2026-0006")?.cvss40?.baseScore, byId.get("CVE-2026-0006")?.cvss40?.rejected], [10, undefined]);
    assert.deepEqual(dropped, { "stated score contradicts vector": 3 });
  });

  it("OSV: a CVSS_V3 or CVSS_V4 severity with an invalid vector is dropped and counted; the record stays", () => {
    const drops: Record<string, number> = {};
    const item = parseOsvRecord(
      {
        id: "GHSA-aaaa-bbbb-cccc",
        modified: "2026-01-01T00:00:00Z",
        severity: [
          { type: "CVSS_V3", score: "CVSS:3.1/AV:Q/AC:Z/PR:N/UI:N/S:U/C:H/I:H/A:H" },
          { type: "CVSS_V3", score: V31 },
          { type: "CVSS_V4", score: "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/SC:N/VI:H/SI:N/VA:H/SA:N" },
          { type: "CVSS_V4", score: V40 },
        ],
        affected: [
          {
            package: { ecosystem: "npm", name: "left-pad" },
            severity: [{ type: "CVSS_V3", score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H" }],
            ranges: [{ type: "SEMVER", events: [{ introduced: "0" }, { fixed: "1.0.1" }] }],
          },
        ],
      },
      (reason, n) => void (drops[reason] = (drops[reason] ?? 0) + n),
    );
    assert.ok(item.ok);
    assert.deepEqual(item.record.severity, [
      { type: "CVSS_V3", score: V31 },
      { type: "CVSS_V4", score: V40 },
    ]);
    assert.deepEqual(item.record.affected[0]?.severity, []);
    assert.equal(item.record.cvss3, V31, "the first valid v3 vector is the record's");
    assert.deepEqual(drops, { "invalid cvss vector": 3 });
  });
});
