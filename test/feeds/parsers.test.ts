/**
 * Feed parsers on real data (the CISA KEV catalog of 2025-08-25, an Ubuntu OSV record), on
 * fixtures written to the published formats (OSV directory, EPSS CSV, NVD API page), on zip
 * archives built here (with hostile entry names and sizes), and on generated 150 MB streams
 * that must parse in bounded memory.
 */
import assert from "node:assert/strict";
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path, { dirname } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { crc32, deflateRawSync, gzipSync } from "node:zlib";
import { parseEpss } from "../../aggregator/feeds/parse/epss.js";
import { type KevRecord, parseKev } from "../../aggregator/feeds/parse/kev.js";
import { parseNvd } from "../../aggregator/feeds/parse/nvd.js";
import { type OsvRecord, parseOsvRecord, parseOsvStream, readOsvSource } from "../../aggregator/feeds/parse/osv.js";
import { type FeedItem, type FeedStream, FeedFormatError } from "../../aggregator/feeds/parse/types.js";

// Compiled to dist/test/feeds/parsers.test.js; SHADOWLAYER_REPO_ROOT overrides the guess.
const root = process.env["SHADOWLAYER_REPO_ROOT"] ?? path.resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const fixturePath = (rel: string): string => path.join(root, "test/fixtures/feeds", rel);
const MiB = 1024 * 1024;

async function collect<T>(stream: AsyncIterable<FeedItem<T>>): Promise<{ records: T[]; rejected: FeedItem<T>[] }> {
  const records: T[] = [];
  const rejected: FeedItem<T>[] = [];
  for await (const item of stream) (item.ok ? records.push(item.record) : rejected.push(item));
  return { records, rejected };
}

/** Splits a buffer into small chunks so that values straddle chunk boundaries. */
function chunked(buf: Buffer, size = 1000): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    })(),
  );
}

function reasonsOf<T>(items: FeedItem<T>[]): string[] {
  return items.map((i) => (i.ok ? "ok" : i.rejection.reason)).sort();
}

// ---- a minimal zip writer (stored or deflated entries, no zip64), enough for hostile test archives ----

interface ZipInput {
  name: string;
  data: Buffer;
  deflate?: boolean;
  /** Lie about the uncompressed size in both headers. */
  declaredSize?: number;
  crc?: number;
}

function buildZip(entries: ZipInput[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, "utf8");
    const body = e.deflate === true ? deflateRawSync(e.data) : e.data;
    const method = e.deflate === true ? 8 : 0;
    const crc = e.crc ?? crc32(e.data);
    const size = e.declaredSize ?? e.data.length;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // names are UTF-8
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(body.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, body);
    centrals.push(central, name);
    offset += local.length + name.length + body.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

// ---- generated large inputs ----

const PADDING = "x".repeat(300);

/** ~750 bytes of OSV record; a template rather than JSON.stringify so that generating stays cheaper than parsing. */
function osvLine(n: number): string {
  const eco = n % 2 === 0 ? "npm" : "PyPI";
  return (
    `{"id":"GHSA-gen-${n}","modified":"2024-01-01T00:00:00Z","aliases":["CVE-2024-${10000 + n}"],` +
    `"summary":"Generated advisory ${n} \\\"quoted\\\" ${PADDING}",` +
    `"severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],` +
    `"affected":[{"package":{"ecosystem":"${eco}","name":"package-${n % 5000}"},` +
    `"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.${n % 100}.${n % 7}"}]}],` +
    `"versions":["0.1.0","0.2.0","0.3.0","1.0.0"]}]}`
  );
}

/** `count` records produced on demand, in ~64 KiB chunks, never held whole. */
function generated(count: number, line: (n: number) => string, open = "", sep = "\n", close = ""): Readable {
  return Readable.from(
    (function* () {
      let parts: string[] = [open];
      let size = 0;
      for (let n = 0; n < count; n++) {
        const s = (n === 0 ? "" : sep) + line(n);
        parts.push(s);
        size += s.length;
        if (size > 64 * 1024) {
          yield Buffer.from(parts.join(""));
          parts = [];
          size = 0;
        }
      }
      parts.push(close);
      yield Buffer.from(parts.join(""));
    })(),
  );
}

async function measure<T>(stream: FeedStream<T, object>, sampleEvery = 2000): Promise<{ n: number; seconds: number; peakHeap: number }> {
  const start = performance.now();
  let peakHeap = 0;
  let n = 0;
  for await (const item of stream) {
    if (item.ok) n++;
    if (n % sampleEvery === 0) peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
  }
  return { n, seconds: (performance.now() - start) / 1000, peakHeap };
}

const throughput: string[] = [];

after(() => {
  for (const line of throughput) console.log(`# throughput: ${line}`);
});

// ---- KEV ----

describe("KEV", () => {
  const file = fixturePath("kev/known_exploited_vulnerabilities.json");

  const check = async (stream: FeedStream<KevRecord, { catalogVersion?: string; count?: number; dateReleased?: string }>) => {
    const { records } = await collect(stream);
    assert.equal(stream.stats.accepted, 1404);
    assert.equal(stream.stats.rejected, 0);
    assert.deepEqual(stream.meta(), {
      title: "CISA Catalog of Known Exploited Vulnerabilities",
      catalogVersion: "2025.08.25",
      dateReleased: "2025-08-25T17:04:19.9796Z",
      count: 1404,
    });
    const log4j = records.find((r) => r.cveID === "CVE-2021-44228");
    assert.deepEqual(log4j, {
      cveID: "CVE-2021-44228",
      dateAdded: "2021-12-10",
      knownRansomwareCampaignUse: true,
      vendorProject: "Apache",
      product: "Log4j2",
      dueDate: "2021-12-24",
    });
    // The newest entry, first in the file, says "Unknown".
    assert.equal(records[0]?.cveID, "CVE-2025-48384");
    assert.equal(records[0]?.knownRansomwareCampaignUse, false);
    assert.equal(records.filter((r) => r.knownRansomwareCampaignUse).length, 293);
    return records;
  };

  it("parses the real catalog: 1404 entries, Log4j known to ransomware", async () => {
    await check(parseKev(createReadStream(file)));
  });

  it("gives the same from a gzipped copy read in 1000-byte chunks", async () => {
    const plain = await check(parseKev(createReadStream(file)));
    const gz = await check(parseKev(chunked(gzipSync(readFileSync(file)))));
    assert.deepEqual(gz, plain);
  });

  it("releases its input when the consumer stops early", async () => {
    const input = createReadStream(file);
    for await (const item of parseKev(input)) if (item.ok) break;
    assert.ok(input.destroyed);
    const gz = chunked(gzipSync(readFileSync(file)));
    for await (const item of parseKev(gz)) if (item.ok) break;
    assert.ok(gz.destroyed);
  });

  it("rejects bad elements one by one and keeps the rest", async () => {
    const good = { cveID: "CVE-2021-44228", vendorProject: "Apache", product: "Log4j2", dateAdded: "2021-12-10", knownRansomwareCampaignUse: "Known" };
    const doc = {
      catalogVersion: "x",
      vulnerabilities: [
        good,
        42,
        { ...good, cveID: "CVE-21-44228" },
        { ...good, cveID: "CVE-2022-0001", dateAdded: "2022-02-30" },
        { ...good, cveID: "CVE-2022-0002", knownRansomwareCampaignUse: "Maybe" },
        { ...good, cveID: "CVE-2022-0003", product: "p".repeat(20_000) },
        { ...good, cveID: "CVE-2022-0004", vendorProject: 7 },
        { ...good, cveID: "CVE-2022-0005", extra: { nested: [1, 2, { deep: "]}" }] } },
        good,
      ],
    };
    const stream = parseKev(Readable.from([Buffer.from(JSON.stringify(doc, null, 1))]));
    const { records, rejected } = await collect(stream);
    assert.deepEqual(
      records.map((r) => r.cveID),
      ["CVE-2021-44228", "CVE-2022-0005"],
    );
    assert.deepEqual(stream.stats.reasons, {
      "not an object": 1,
      "invalid id": 1,
      "invalid date": 1,
      "invalid field": 2,
      "too large": 1,
      "duplicate id": 1,
    });
    assert.equal(rejected.length, 7);
    const first = rejected[0];
    assert.ok(first !== undefined && !first.ok && first.rejection.at === "kev line 11", JSON.stringify(first));
  });

  it("ends a truncated or non-JSON catalog with an error that says where, after the good records", async () => {
    const text = readFileSync(file);
    const truncated = parseKev(chunked(text.subarray(0, 600_000), 4096));
    let seen = 0;
    await assert.rejects(
      async () => {
        for await (const item of truncated) if (item.ok) seen++;
      },
      (err: unknown) => err instanceof FeedFormatError && err.reason === "truncated" && /line \d+, byte 600000/.test(err.message),
    );
    assert.ok(seen > 500 && seen < 1404, `${seen} records before the cut`);

    await assert.rejects(
      collect(parseKev(Readable.from([Buffer.from("<html><body>502 Bad Gateway</body></html>")]))),
      (err: unknown) => err instanceof FeedFormatError && /expected '\{' at line 1, byte 0/.test(err.message),
    );
    await assert.rejects(
      collect(parseKev(Readable.from([Buffer.from('{"catalogVersion": "1",\n "vulnerabilities": [ {"a": 1} }')]))),
      (err: unknown) => err instanceof FeedFormatError && /expected ',' or '\]' at line 2, byte 55/.test(err.message),
    );
    await assert.rejects(
      collect(parseKev(Readable.from([Buffer.from('{"catalogVersion": "1"}')]))),
      (err: unknown) => err instanceof FeedFormatError && /no "vulnerabilities" array/.test(err.message),
    );
    const gz = gzipSync(text);
    await assert.rejects(
      collect(parseKev(chunked(gz.subarray(0, gz.length - 100), 8192))),
      (err: unknown) => err instanceof FeedFormatError && err.reason === "truncated" && /gzip/.test(err.message),
    );
  });
});

// ---- OSV ----

describe("OSV", () => {
  let tmp = "";
  before(() => {
    tmp = mkdtempSync(path.join(tmpdir(), "shadowlayer-feeds-test-"));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it("parses the real Ubuntu record: source package eglibc, its binaries, the fixed range", async () => {
    const stream = readOsvSource(fixturePath("osv/CVE-2015-0235.json"));
    const { records } = await collect(stream);
    assert.equal(records.length, 1);
    const r = records[0]!;
    assert.equal(r.id, "CVE-2015-0235");
    assert.equal(r.modified, "2015-01-27T18:00:00Z");
    assert.equal(r.withdrawn, undefined);
    assert.equal(r.affected.length, 1);
    const a = r.affected[0]!;
    assert.equal(a.ecosystem, "Ubuntu:14.04:LTS");
    assert.equal(a.name, "eglibc");
    assert.equal(a.purl, "pkg:deb/ubuntu/eglibc@2.19-0ubuntu6?arch=src?distro=trusty");
    assert.deepEqual(a.ranges, [{ type: "ECOSYSTEM", events: [{ introduced: "0" }, { fixed: "2.19-0ubuntu6" }] }]);
    assert.equal(a.versions.length, 11);
    assert.equal(a.binaries?.length, 24);
    assert.ok(a.binaries?.includes("libc6") && a.binaries.includes("libc-bin") && a.binaries.includes("nscd"));
    assert.deepEqual(stream.stats, { accepted: 1, rejected: 0, reasons: {}, dropped: {}, samples: [] });
  });

  it("normalises the other binaries shapes", () => {
    const base = { id: "X-1", modified: "2024-01-01T00:00:00Z" };
    const pkg = { ecosystem: "Debian:12", name: "openssl" };
    const shapes = [
      [["libssl3", "openssl"], ["libssl3", "openssl"]],
      [[{ binary_name: "libssl3", binary_version: "3.0.11-1" }, { binary_name: "openssl", binary_version: "3.0.11-1" }], ["libssl3", "openssl"]],
      [[{ libssl3: "3.0.11-1", openssl: "3.0.11-1" }], ["libssl3", "openssl"]],
    ] as const;
    for (const [binaries, want] of shapes) {
      const item = parseOsvRecord({ ...base, affected: [{ package: pkg, ecosystem_specific: { binaries } }] });
      assert.ok(item.ok, JSON.stringify(item));
      assert.deepEqual(item.record.affected[0]?.binaries, want);
    }
    const bad = parseOsvRecord({ ...base, affected: [{ package: pkg, ecosystem_specific: { binaries: [3] } }] });
    assert.ok(!bad.ok && bad.rejection.reason === "invalid field" && bad.rejection.id === "X-1");
  });

  it("reads a directory: good records in four ecosystems, bad ones counted by reason", async () => {
    const stream = readOsvSource(fixturePath("osv-dir"));
    const { records, rejected } = await collect(stream);
    const byId = new Map(records.map((r) => [r.id, r]));
    assert.deepEqual([...byId.keys()].sort(), [
      "ALPINE-CVE-2023-5678",
      "DEBIAN-CVE-2023-4911",
      "GHSA-mixd-mixd-mixd",
      "GHSA-p6mc-m468-83gw",
      "GHSA-wdrn-0000-0000",
      "PYSEC-2023-74",
    ]);
    assert.equal(stream.stats.accepted, 6);
    assert.equal(stream.stats.rejected, 6);
    assert.deepEqual(stream.stats.reasons, {
      "duplicate id": 1,
      "invalid date": 1,
      "invalid json": 1,
      "missing id": 1,
      truncated: 1,
      "unknown ecosystem": 1,
    });
    assert.deepEqual(stream.stats.dropped, { "unknown ecosystem": 1 });
    assert.equal(stream.stats.samples.length, 6);
    const go = rejected.find((r) => !r.ok && r.rejection.id === "GO-2024-0001");
    assert.ok(go !== undefined && !go.ok && go.rejection.reason === "unknown ecosystem");
    const trunc = rejected.find((r) => !r.ok && r.rejection.reason === "truncated");
    assert.ok(trunc !== undefined && !trunc.ok && trunc.rejection.at === path.join("bad", "truncated.json") && trunc.rejection.id === undefined);
    assert.match(trunc.rejection.detail ?? "", /not closed at line 5, byte 87/);

    const deb = byId.get("DEBIAN-CVE-2023-4911")!;
    assert.deepEqual(
      deb.affected.map((a) => [a.ecosystem, a.name, a.ranges[0]?.events.at(-1)?.fixed]),
      [
        ["Debian:12", "glibc", "2.36-9+deb12u3"],
        ["Debian:13", "glibc", "2.37-12"],
      ],
    );
    assert.equal(byId.get("ALPINE-CVE-2023-5678")?.affected[0]?.ecosystem, "Alpine:v3.19");
    const npm = byId.get("GHSA-p6mc-m468-83gw")!;
    assert.equal(npm.modified, "2024-02-20T18:37:29Z", "the newer copy wins");
    assert.equal(npm.cvss3, "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:H");
    assert.deepEqual(npm.affected[1]?.ranges[0], { type: "SEMVER", events: [{ introduced: "0" }, { last_affected: "4.17.15" }] });
    const py = byId.get("PYSEC-2023-74")!;
    assert.deepEqual(
      py.affected[0]?.ranges.map((r) => r.type),
      ["ECOSYSTEM", "GIT"],
    );
    assert.equal(py.cvss3, "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N", "found at affected level");
    assert.deepEqual(
      byId.get("GHSA-mixd-mixd-mixd")?.affected.map((a) => a.ecosystem),
      ["PyPI"],
    );
    assert.equal(byId.get("GHSA-wdrn-0000-0000")?.withdrawn, "2024-03-01T00:00:00Z");
  });

  it("keeps the latest `modified` when a newer copy comes second (the newer one supersedes)", async () => {
    const rec = (modified: string, fixed: string) =>
      JSON.stringify({ id: "GHSA-dup", modified, affected: [{ package: { ecosystem: "npm", name: "a" }, ranges: [{ type: "SEMVER", events: [{ introduced: "0" }, { fixed }] }] }] });
    const text = [rec("2024-01-01T00:00:00Z", "1.0.1"), rec("2024-06-01T00:00:00Z", "1.0.2"), rec("2024-03-01T00:00:00Z", "1.0.3"), "{not json}", ""].join("\n");
    const stream = parseOsvStream(Readable.from([Buffer.from(text)]), "json");
    const store = new Map<string, OsvRecord>();
    for await (const item of stream) if (item.ok) store.set(item.record.id, item.record);
    assert.equal(store.get("GHSA-dup")?.affected[0]?.ranges[0]?.events[1]?.fixed, "1.0.2");
    assert.equal(stream.stats.accepted, 1);
    assert.deepEqual(stream.stats.reasons, { "duplicate id": 2, "invalid json": 1 });
    assert.equal(stream.stats.samples.find((s) => s.reason === "invalid json")?.at, "osv line 4");
  });

  it("reads an all.zip in memory: traversal names and oversized entries rejected, nothing written", async () => {
    const dir = fixturePath("osv-dir");
    const good = ["debian/DEBIAN-CVE-2023-4911.json", "alpine/v3.19/ALPINE-CVE-2023-5678.json", "npm/GHSA-p6mc-m468-83gw.json", "pypi/nested/PYSEC-2023-74.json"];
    const record = readFileSync(path.join(dir, good[2]!));
    const zip = buildZip([
      ...good.map((g) => ({ name: path.basename(g), data: readFileSync(path.join(dir, g)), deflate: true })),
      { name: "../evil.json", data: record },
      { name: "/abs.json", data: record },
      { name: "..\\win-evil.json", data: record },
      { name: "huge.json", data: Buffer.alloc(11 * MiB, 0x20), deflate: true },
      { name: "lying.json", data: Buffer.alloc(11 * MiB, 0x20), deflate: true, declaredSize: 100 },
      { name: "mismatch.json", data: record, declaredSize: 10 },
      { name: "bad-crc.json", data: record, crc: 1234 },
      { name: "broken.json", data: Buffer.from('{"id": "GHSA-brok", "modified": }') },
      { name: "GO-2024-0001.json", data: readFileSync(path.join(dir, "bad/GO-2024-0001.json")) },
      { name: "notes/", data: Buffer.alloc(0) },
      { name: "notes/README.txt", data: Buffer.from("hello") },
    ]);
    const zipPath = path.join(tmp, "all.zip");
    writeFileSync(zipPath, zip);
    const spoolsBefore = readdirSync(tmpdir()).filter((n) => n.startsWith("shadowlayer-osv-")).length;

    const expectStats = (stream: FeedStream<OsvRecord, object>, records: OsvRecord[]) => {
      assert.deepEqual(records.map((r) => r.id).sort(), ["ALPINE-CVE-2023-5678", "DEBIAN-CVE-2023-4911", "GHSA-p6mc-m468-83gw", "PYSEC-2023-74"]);
      assert.deepEqual(stream.stats.reasons, {
        "path traversal": 3,
        "too large": 2,
        "invalid zip entry": 2,
        "invalid json": 1,
        "unknown ecosystem": 1,
      });
      assert.deepEqual(stream.stats.dropped, { "not a json entry": 1 });
      const evil = stream.stats.samples.find((s) => s.at === "../evil.json");
      assert.equal(evil?.reason, "path traversal");
      assert.equal(stream.stats.samples.find((s) => s.at === "huge.json")?.reason, "too large");
    };

    const fromFile = readOsvSource(zipPath);
    expectStats(fromFile, (await collect(fromFile)).records);
    const fromStream = parseOsvStream(createReadStream(zipPath), "zip");
    expectStats(fromStream, (await collect(fromStream)).records);
    const fromGzStream = parseOsvStream(chunked(gzipSync(zip), 65536), "zip");
    expectStats(fromGzStream, (await collect(fromGzStream)).records);

    assert.ok(!existsSync(path.join(tmp, "..", "evil.json")) && !existsSync("/abs.json") && !existsSync(path.join(tmp, "..", "win-evil.json")));
    assert.deepEqual(readdirSync(tmp), ["all.zip"]);
    assert.equal(readdirSync(tmpdir()).filter((n) => n.startsWith("shadowlayer-osv-")).length, spoolsBefore, "spool removed");
  });

  it("closes the archive when the consumer stops early", async () => {
    const zipPath = path.join(tmp, "early.zip");
    writeFileSync(zipPath, buildZip([0, 1, 2].map((n) => ({ name: `${n}.json`, data: Buffer.from(osvLine(n)) }))));
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    for await (const item of readOsvSource(zipPath)) if (item.ok) break;
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(fds(), before);
    rmSync(zipPath);
  });

  it("fails a corrupt zip as a whole", async () => {
    const zipPath = path.join(tmp, "corrupt.zip");
    writeFileSync(zipPath, Buffer.concat([Buffer.from("PK\x03\x04"), Buffer.alloc(100)]));
    await assert.rejects(collect(readOsvSource(zipPath)), (err: unknown) => err instanceof FeedFormatError && err.reason === "invalid zip");
    rmSync(zipPath);
  });

  it(`zip throughput: 20,000 entries`, async () => {
    const entries: ZipInput[] = [];
    for (let n = 0; n < 20_000; n++) entries.push({ name: `GHSA-gen-${n}.json`, data: Buffer.from(osvLine(n)), deflate: true });
    const zipPath = path.join(tmp, "big.zip");
    writeFileSync(zipPath, buildZip(entries));
    const { n, seconds } = await measure(readOsvSource(zipPath));
    assert.equal(n, 20_000);
    throughput.push(`OSV all.zip, 20,000 deflated entries: ${Math.round(n / seconds)} records/s (${seconds.toFixed(2)} s)`);
    rmSync(zipPath);
  });
});

// ---- EPSS ----

describe("EPSS", () => {
  const file = fixturePath("epss/epss_scores-2025-08-25.csv");
  const check = async (input: Readable) => {
    const stream = parseEpss(input);
    const { records, rejected } = await collect(stream);
    assert.deepEqual(stream.meta(), { modelVersion: "v2025.03.14", scoreDate: "2025-08-25T00:00:00+0000" });
    assert.deepEqual(
      records.map((r) => r.cve),
      ["CVE-1999-0001", "CVE-2015-0235", "CVE-2021-44228", "CVE-2023-4911", "CVE-2024-3094", "CVE-2025-48384", "CVE-2020-8203"],
    );
    assert.deepEqual(records[2], { cve: "CVE-2021-44228", epss: 0.94358, percentile: 0.99955 });
    assert.deepEqual(records[6], { cve: "CVE-2020-8203", epss: 0.03167, percentile: 0.86624 }, "CRLF line");
    assert.deepEqual(stream.stats.reasons, { "not a number": 1, "out of range": 2, "invalid id": 2, "invalid row": 1, "duplicate id": 1 });
    assert.deepEqual(reasonsOf(rejected).length, 7);
    assert.equal(stream.stats.samples[0]?.at, "epss line 9");
    return records;
  };

  it("parses plain and gzipped CSV alike, with the model version", async () => {
    const plain = await check(createReadStream(file));
    const gz = await check(chunked(gzipSync(readFileSync(file)), 17));
    assert.deepEqual(gz, plain);
  });

  it("fails a file without the header", async () => {
    await assert.rejects(
      collect(parseEpss(Readable.from([Buffer.from("<!DOCTYPE html>\n<html></html>\n")]))),
      (err: unknown) => err instanceof FeedFormatError && /header .* at line 1/.test(err.message),
    );
    await assert.rejects(collect(parseEpss(Readable.from([Buffer.alloc(0)]))), FeedFormatError);
  });
});

// ---- NVD ----

describe("NVD", () => {
  it("chooses Primary v3.1, else any v3.1, else v3.0; keeps CVEs without metrics; rejects bad entries", async () => {
    const stream = parseNvd(chunked(readFileSync(fixturePath("nvd/cves-2.0-page.json")), 333));
    const { records } = await collect(stream);
    const byId = new Map(records.map((r) => [r.cve, r]));
    assert.deepEqual(stream.meta(), {
      resultsPerPage: 9,
      startIndex: 0,
      totalResults: 9,
      format: "NVD_CVE",
      version: "2.0",
      timestamp: "2025-08-25T12:00:00.000",
    });
    assert.deepEqual(byId.get("CVE-2021-44228")?.cvss31, {
      version: "3.1",
      vector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
      baseScore: 10,
      severity: "CRITICAL",
      source: "nvd@nist.gov",
      type: "Primary",
    });
    assert.equal(byId.get("CVE-2021-44228")?.lastModified, "2025-02-04T15:15:13.773");
    assert.equal(byId.get("CVE-2024-3094")?.cvss31?.source, "secalert@redhat.com");
    assert.equal(byId.get("CVE-2024-3094")?.vulnStatus, "Modified");
    assert.deepEqual(
      [byId.get("CVE-2015-0235")?.cvss31?.version, byId.get("CVE-2015-0235")?.cvss31?.baseScore, byId.get("CVE-2015-0235")?.cvss31?.type],
      ["3.0", 9.8, "Primary"],
    );
    assert.equal(byId.get("CVE-2025-0001")?.cvss31, undefined);
    assert.equal(byId.get("CVE-2025-0002")?.cvss31, undefined);
    assert.equal(byId.get("CVE-2025-0003")?.cvss31?.baseScore, 7.8, "the invalid Primary (11.5) is dropped");
    assert.equal(stream.stats.accepted, 6);
    assert.deepEqual(stream.stats.reasons, { "invalid id": 1, "missing field": 1, "not an object": 1, "invalid date": 1, "duplicate id": 1 });
    assert.deepEqual(stream.stats.dropped, { "invalid metric": 1 });
  });
});

// ---- bounded memory on large streams ----

describe("large streams", () => {
  it("parses 200,000 OSV JSON lines (~150 MB, generated) in bounded heap", async () => {
    const count = 200_000;
    const stream = parseOsvStream(generated(count, osvLine), "json");
    const { n, seconds, peakHeap } = await measure(stream);
    assert.equal(n, count);
    assert.equal(stream.stats.rejected, 0);
    const mb = (count * (osvLine(0).length + 1)) / MiB;
    throughput.push(
      `OSV JSON lines, ${count} records (${mb.toFixed(0)} MiB): ${Math.round(n / seconds)} records/s, ${(mb / seconds).toFixed(0)} MiB/s, peak heap ${(peakHeap / MiB).toFixed(0)} MiB`,
    );
    assert.ok(peakHeap < 250 * MiB, `peak heap ${peakHeap} (garbage included; a whole-file load needs far more)`);
  });

  it("parses a ~150 MB OSV JSON array (generated) in bounded heap", async () => {
    const count = 200_000;
    const stream = parseOsvStream(generated(count, osvLine, "[\n", ",\n", "\n]\n"), "json");
    const { n, seconds, peakHeap } = await measure(stream);
    assert.equal(n, count);
    const mb = (count * (osvLine(0).length + 2)) / MiB;
    throughput.push(
      `OSV JSON array, ${count} records (${mb.toFixed(0)} MiB): ${Math.round(n / seconds)} records/s, ${(mb / seconds).toFixed(0)} MiB/s, peak heap ${(peakHeap / MiB).toFixed(0)} MiB`,
    );
    assert.ok(peakHeap < 250 * MiB, `peak heap ${peakHeap} (garbage included; a whole-file load needs far more)`);
  });

  it("parses a ~150 MB KEV-like catalog (generated, gzipped on the fly) in bounded heap", async () => {
    const count = 400_000;
    const entry = (n: number) =>
      JSON.stringify({
        cveID: `CVE-2024-${String(10000 + n)}`,
        vendorProject: "Vendor",
        product: "Product",
        vulnerabilityName: "Generated Vulnerability",
        dateAdded: "2024-01-01",
        shortDescription: "x".repeat(200),
        requiredAction: "Apply mitigations per vendor instructions or discontinue use of the product if mitigations are unavailable.",
        dueDate: "2024-01-22",
        knownRansomwareCampaignUse: n % 5 === 0 ? "Known" : "Unknown",
        notes: "",
        cwes: ["CWE-20"],
      });
    const source = generated(count, entry, '{"catalogVersion": "gen", "vulnerabilities": [\n', ",\n", "]}\n");
    const { createGzip } = await import("node:zlib");
    const stream = parseKev(source.pipe(createGzip({ level: 1 })));
    const { n, seconds, peakHeap } = await measure(stream);
    assert.equal(n, count);
    assert.equal(stream.meta().catalogVersion, "gen");
    const mb = (count * (entry(0).length + 2)) / MiB;
    throughput.push(
      `KEV-like array, gzipped, ${count} records (${mb.toFixed(0)} MiB): ${Math.round(n / seconds)} records/s, ${(mb / seconds).toFixed(0)} MiB/s incl. gzip+gunzip, peak heap ${(peakHeap / MiB).toFixed(0)} MiB`,
    );
    assert.ok(peakHeap < 250 * MiB, `peak heap ${peakHeap} (garbage included; a whole-file load needs far more)`);
  });
});
