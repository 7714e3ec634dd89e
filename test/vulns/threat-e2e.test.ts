/**
 * Threat end to end on a real engine: an image whose layers install a vulnerable package and
 * upgrade it in a later layer, remove another, and add npm and PyPI packages on top. The agent
 * reads the inventory from the layers, the aggregator matches it against OSV and KEV files, and
 * the CLI shows the vulnerabilities, the SBOM, the feeds and the scores. Changing a feed file
 * changes the scores without the agent reading the image again.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { policyFromInit, startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { cleanupContainers, execFileP, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";
import { ensureInventoryImage } from "../harness/inventory-images.js";

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, "dist/cli/main.js");

const osv = (id: string, ecosystem: string, name: string, fixed: string, aliases: string[] = [], vector = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") =>
  JSON.stringify({
    schema_version: "1.6.0",
    id,
    modified: new Date().toISOString(),
    aliases,
    summary: `${id} (${name})`,
    severity: [{ type: "CVSS_V3", score: vector }],
    affected: [{ package: { ecosystem, name }, ranges: [{ type: ecosystem === "npm" ? "SEMVER" : "ECOSYSTEM", events: [{ introduced: "0" }, { fixed }] }] }],
  });

describe("threat end to end (real image layers, real feeds files)", () => {
  let eng: TestEngine;
  let dir: string;
  let aggregator: RunningAggregator;
  let agent: RunningAgent;
  let c: Docker.Container;
  let layers: string[];

  before(async () => {
    eng = await testEngine();
    const { image } = await ensureInventoryImage(eng.docker);
    const { stdout } = await execFileP("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", image]);
    layers = JSON.parse(stdout) as string[];
    dir = await mkdtemp(join(tmpdir(), "sl-threat-"));
    await mkdir(join(dir, "osv"));
    // openssl: fixed in deb12u1; layer B upgraded libssl3 to 3.0.11-1~deb12u2, so not vulnerable.
    await writeFile(join(dir, "osv", "DSA-5532-1.json"), osv("DSA-5532-1", "Debian:12", "openssl", "3.0.11-1~deb12u1", ["CVE-2023-5678"]));
    // zlib1g was removed by layer B: its advisory must not be reported.
    await writeFile(join(dir, "osv", "DLA-3000-1.json"), osv("DLA-3000-1", "Debian:12", "zlib", "1:1.2.13.dfsg-2", ["CVE-2022-37434"]));
    await writeFile(join(dir, "osv", "GHSA-p6mc-m468-83gw.json"), osv("GHSA-p6mc-m468-83gw", "npm", "lodash", "4.17.21", ["CVE-2020-8203"]));
    await writeFile(join(dir, "osv", "PYSEC-2023-74.json"), osv("PYSEC-2023-74", "PyPI", "Requests", "2.31.0", ["CVE-2023-32681"], "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N"));
    await writeFile(join(dir, "kev.json"), JSON.stringify({ catalogVersion: "1", dateReleased: "2026-11-27T00:00:00Z", count: 0, vulnerabilities: [] }));
    aggregator = await startAggregator({
      dataDir: join(dir, "agg"),
      listen: "127.0.0.1:0",
      tls: "insecure",
      log: silentLogger(),
      feeds: [
        { name: "osv", kind: "osv", source: join(dir, "osv") },
        { name: "kev", kind: "kev", source: join(dir, "kev.json") },
      ],
      policies: [policyFromInit({ name: "prod", labels: { env: "prod" }, rebuild_threshold: 5, switch_threshold: 90 })],
    });
    await aggregator.feeds.idle();
    agent = await startAgent({ node: "threat-node", aggregator: `127.0.0.1:${aggregator.port}`, tls: "insecure", dataDir: join(dir, "agent"), refreshMs: 1000, execSource: "proc", log: silentLogger() });
    c = await runContainer(eng.docker, image, ["/bin/sleep", "600"], { labels: { env: "prod" } });
  });
  after(async () => {
    await agent?.stop();
    await aggregator?.stop();
    await cleanupContainers(eng.docker);
    await rm(dir, { recursive: true, force: true });
  });

  const cli = async (...args: string[]) => (await run(process.execPath, [CLI, ...args, "--aggregator", `127.0.0.1:${aggregator.port}`, "--insecure"])).stdout;

  it("reports what the top layer holds, each on the layer that installed it", async () => {
    const s = await waitFor("scores with vulnerabilities", () => {
      const x = aggregator.scores.get(c.id);
      return x !== undefined && x.vulns >= 2 ? x : undefined;
    }, 30_000, 200);
    const res = JSON.parse(await cli("vulns", c.id, "--json")) as { vulnerabilities: Array<{ id: string; package: string; layer_id: string; installed_version: string; fixed_version: string | null }>; os: { id: string; version_id: string } };
    const ids = res.vulnerabilities.map((v) => v.id).sort();
    assert.deepEqual(ids, ["GHSA-p6mc-m468-83gw", "PYSEC-2023-74"], "openssl was upgraded past the fix; zlib1g was removed");
    const layerC = layers[3];
    for (const v of res.vulnerabilities) assert.equal(v.layer_id, layerC, `${v.id} on the layer that added ${v.package}`);
    assert.equal(res.vulnerabilities.find((v) => v.package === "lodash")?.fixed_version, "4.17.21");
    assert.deepEqual(res.os, { id: "debian", version_id: "12" });
    assert.equal(s.policy?.name, "prod");
    // prod rebuilds at 5, the default only at 60: with a risk in between, the decision is prod's.
    assert.ok(s.risk >= 5 && s.risk < 60, `risk ${s.risk}`);
    assert.equal(s.rebuild, true);
  });

  it("prints a CycloneDX 1.5 SBOM with each component's layer; the upgraded package on the upgrading layer", async () => {
    const bom = JSON.parse(await cli("sbom", c.id.slice(0, 12))) as {
      bomFormat: string;
      specVersion: string;
      components: Array<{ name: string; version: string; purl: string; properties: Array<{ name: string; value: string }> }>;
    };
    assert.equal(bom.bomFormat, "CycloneDX");
    assert.equal(bom.specVersion, "1.5");
    const layerOf = (name: string) => bom.components.find((x) => x.name === name)?.properties.find((p) => p.name === "shadowlayer:layer_id")?.value;
    const ssl = bom.components.find((x) => x.name === "libssl3");
    assert.equal(ssl?.version, "3.0.11-1~deb12u2");
    assert.equal(ssl?.purl, "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?distro=debian-12");
    assert.equal(layerOf("libssl3"), layers[2], "attributed to the layer that upgraded it");
    assert.equal(bom.components.filter((x) => x.name === "libssl3").length, 1, "the old version is gone");
    assert.equal(bom.components.find((x) => x.name === "zlib1g"), undefined, "removed packages are not in the image");
    assert.equal(layerOf("lodash"), layers[3]);
  });

  it("a feed changed on disk changes the scores; the agent does not read the image again", async () => {
    const scanned = agent.inventory?.stats.scanned;
    const before = aggregator.scores.get(c.id);
    // A newer openssl advisory now covers the upgraded version too, and requests is in KEV.
    await writeFile(join(dir, "osv", "DSA-5600-1.json"), osv("DSA-5600-1", "Debian:12", "openssl", "3.0.13-1~deb12u1", ["CVE-2024-0727"]));
    await writeFile(join(dir, "kev.json"), JSON.stringify({ catalogVersion: "2", dateReleased: "2026-11-27T00:00:00Z", count: 1, vulnerabilities: [{ cveID: "CVE-2023-32681", vendorProject: "psf", product: "requests", vulnerabilityName: "x", dateAdded: "2026-11-27", shortDescription: "x", requiredAction: "x", dueDate: "2026-12-18", knownRansomwareCampaignUse: "Unknown", notes: "" }] }));
    const feeds = JSON.parse(await cli("feeds", "--refresh", "--json")) as Array<{ name: string; state: string; records: number }>;
    assert.deepEqual(feeds.map((f) => [f.name, f.state]), [["osv", "ok"], ["kev", "ok"]]);
    const after = await waitFor("rescored", () => {
      const x = aggregator.scores.get(c.id);
      return x !== undefined && x.vulns === 3 ? x : undefined;
    }, 10_000);
    const layerB = after.layers.find((l) => l.layerId === layers[2]);
    assert.equal(layerB?.reasons[0]?.id, "DSA-5600-1");
    assert.ok((after.threat ?? 0) > (before?.threat ?? 0));
    assert.match(after.layers.find((l) => l.layerId === layers[3])?.reasons.map((r) => r.detail).join(" ") ?? "", /requests .* KEV/);
    assert.equal(agent.inventory?.stats.scanned, scanned, "no image was read again");
    const table = await cli("scores");
    assert.match(table, /^CONTAINER\s+NODE\s+RISK/m);
    assert.match(table, /DSA-5600-1|PYSEC-2023-74/);
  });

  it("policies change through the admin API and the decision follows at once", async () => {
    await cli("policy", "set", "prod", "--label", "env=prod", "--rebuild", "100", "--switch", "100");
    const s = aggregator.scores.get(c.id);
    assert.equal(s?.policy?.rebuildThreshold, 100);
    assert.equal(s?.rebuild, false);
    const list = JSON.parse(await cli("policy", "list", "--json")) as Array<{ name: string }>;
    assert.deepEqual(list.map((p) => p.name), ["prod", "default"]);
    await assert.rejects(cli("policy", "set", "bad", "--rebuild", "90", "--switch", "10"), /switch_threshold/);
  });
});
