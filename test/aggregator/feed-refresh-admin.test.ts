/**
 * An operator takes a feed that really shrank: `shadowlayer feeds --refresh NAME` refuses a read
 * that keeps fewer than half of the records in effect (the current data stays, the status says
 * why), and `--accept-shrink` takes it. Real mTLS aggregator, real EPSS file, the real CLI with
 * the admin certificate.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startMtlsAggregator, type MtlsAggregator } from "./mtls-aggregator.js";

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, "dist/cli/main.js");
const EPSS_HEAD = "#model_version:v2025.03.14,score_date:2026-11-27T00:00:00+0000\ncve,epss,percentile\n";
const epss = (n: number) => EPSS_HEAD + Array.from({ length: n }, (_, i) => `CVE-2026-${1000 + i},0.5,0.9\n`).join("");

interface FeedRow {
  name: string;
  state: string;
  error: string | null;
  records: number;
}

describe("feeds --refresh --accept-shrink", () => {
  let m: MtlsAggregator;
  let file: string;
  const cli = async (...args: string[]): Promise<FeedRow[]> => {
    const { stdout } = await run(process.execPath, [CLI, "feeds", ...args, "--json", "--aggregator", m.address, "--tls-dir", m.tlsDir]);
    return JSON.parse(stdout) as FeedRow[];
  };
  const epssRow = (rows: FeedRow[]) => rows.find((r) => r.name === "epss");

  before(async () => {
    // The file is written before the aggregator starts; its first load is waited for below.
    file = join(await mkdtemp(join(tmpdir(), "sl-epss-")), "epss.csv");
    await writeFile(file, epss(10));
    m = await startMtlsAggregator({ nodes: ["node-a"], feeds: [{ name: "epss", kind: "epss", source: file }] });
    await m.agg.feeds.refresh("epss");
  });
  after(async () => {
    await m?.stop();
  });

  it("refuses a read of 4 of 10 records without the flag, and takes it with the flag", async () => {
    assert.equal(epssRow(await cli())?.records, 10, "the first load");
    await writeFile(file, epss(4));
    const refused = epssRow(await cli("--refresh", "epss"));
    assert.equal(refused?.records, 10, "the 10 records stay in effect");
    assert.match(refused?.error ?? "", /refused: 4 records, fewer than 50% of the current 10/);
    const taken = epssRow(await cli("--refresh", "epss", "--accept-shrink"));
    assert.equal(taken?.records, 4, "the shrink is taken");
    assert.equal(taken?.error, null);
  });

  it("refuses --accept-shrink without --refresh, naming the flag", async () => {
    await assert.rejects(cli("--accept-shrink"), (err: { stderr?: string; code?: number }) => err.code === 1 && /--accept-shrink: only with --refresh/.test(err.stderr ?? ""));
  });
});
