/**
 * The demo's images on the real engine, read by the agent's own inventory scanner and matched
 * with the aggregator's matcher against the advisory the demo ships: base:1 lists libc6
 * 2.36-9+deb12u1 and matches DEBIAN-CVE-2023-4911, base:2 (2.36-9+deb12u3) does not; the app
 * sits on base:1's layer and names its base and that base's successor. The shipped advisories are
 * the published records kept under test/fixtures/feeds.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import type { ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { InventoryScanner } from "../../agent/inventory/scanner.js";
import { ImageLayerResolver } from "../../agent/layers/image-layers.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { parseOsvRecord } from "../../aggregator/feeds/parse/osv.js";
import { SOURCE_LABELS } from "../../aggregator/rebuild/types.js";
import { matchInventory } from "../../aggregator/vulns/matcher.js";
import { VulnIndex } from "../../aggregator/vulns/index.js";
import { DEMO_ADVISORY, DEMO_CVE, DEMO_KEV_CATALOGUE, DEMO_OSV_RECORD } from "../../cli/demo-advisories.js";
import { APP_IMAGE, BASE_IMAGE, BASE_SUCCESSOR_LABEL, FIXED_BASE_IMAGE, FIXED_LIBC, VULNERABLE_LIBC, ensureDemoImages } from "../../cli/demo-images.js";
import { execFileP, testEngine, type TestEngine } from "../harness/engine.js";

const fixture = (rel: string): unknown => JSON.parse(readFileSync(join(PACKAGE_ROOT, "test/fixtures/feeds", rel), "utf8"));

/** The demo's advisory alone in an index, as the demo feed loads it. */
function demoIndex(): VulnIndex {
  const item = parseOsvRecord(DEMO_OSV_RECORD);
  assert.ok(item.ok, "the shipped record parses");
  const index = new VulnIndex();
  index.replaceOsvFeed("demo-osv", new Map([[item.record.id, VulnIndex.compile(item.record)]]));
  return index;
}

describe("demo images", () => {
  let eng: TestEngine;

  /** The image's inventory as the agent reads and sends it. */
  const inventory = async (ref: string): Promise<ImageInventory> => {
    const resolved = await new ImageLayerResolver(eng.docker, eng.info.rootDir).resolve(ref);
    const scanner = new InventoryScanner(undefined, silentLogger());
    const got: ImageInventory[] = [];
    scanner.on("inventory", (inv) => got.push(inv));
    scanner.want(resolved);
    await scanner.idle();
    assert.equal(got.length, 1, `one inventory of ${ref}`);
    return got[0] as ImageInventory;
  };
  const inspect = async (ref: string) => JSON.parse((await execFileP("docker", ["image", "inspect", "--format", "{{json .}}", ref])).stdout) as { RootFS: { Layers: string[] }; Config: { Labels: Record<string, string> | null } };

  before(async () => {
    eng = await testEngine();
  });

  it("ships the published records as they are in the fixtures", () => {
    assert.deepEqual(DEMO_OSV_RECORD, fixture(`osv-dir/debian/${DEMO_ADVISORY}.json`));
    const kev = fixture("kev/known_exploited_vulnerabilities.json") as { vulnerabilities: Array<{ cveID: string }> };
    assert.deepEqual(DEMO_KEV_CATALOGUE.vulnerabilities, kev.vulnerabilities.filter((v) => v.cveID === DEMO_CVE));
    assert.equal(DEMO_KEV_CATALOGUE.count, 1);
  });

  it("base:1 lists libc6 2.36-9+deb12u1 on Debian 12 and matches the advisory; base:2 does not", async () => {
    const index = demoIndex();
    const vulnerable = await inventory(BASE_IMAGE);
    assert.deepEqual(vulnerable.os?.id, "debian");
    assert.deepEqual(vulnerable.os?.versionId, "12");
    const libc = vulnerable.packages.find((p) => p.name === "libc6");
    assert.deepEqual([libc?.type, libc?.version, libc?.sourceName, libc?.sourceVersion], ["deb", VULNERABLE_LIBC, "glibc", VULNERABLE_LIBC]);
    assert.deepEqual(vulnerable.partial, []);
    const hits = matchInventory(index, vulnerable);
    assert.deepEqual(hits.map((m) => [m.id, m.package, m.installedVersion, m.fixedVersion]), [[DEMO_ADVISORY, "libc6", VULNERABLE_LIBC, FIXED_LIBC]]);

    const fixed = await inventory(FIXED_BASE_IMAGE);
    assert.equal(fixed.packages.find((p) => p.name === "libc6")?.version, FIXED_LIBC);
    assert.deepEqual(matchInventory(index, fixed), [], "the fixed base matches nothing");
  });

  it("the app: four layers on base:1's, labelled with its base and the base's successor", async () => {
    const [base, fixed, app] = await Promise.all([inspect(BASE_IMAGE), inspect(FIXED_BASE_IMAGE), inspect(APP_IMAGE)]);
    assert.equal(app.RootFS.Layers.length, 4);
    assert.equal(base.RootFS.Layers.length, 1);
    assert.equal(app.RootFS.Layers[0], base.RootFS.Layers[0], "the app's bottom layer is base:1's");
    assert.notEqual(fixed.RootFS.Layers[0], base.RootFS.Layers[0], "base:2 is another layer");
    assert.equal(app.Config.Labels?.[SOURCE_LABELS.baseName], BASE_IMAGE);
    assert.equal(app.Config.Labels?.[BASE_SUCCESSOR_LABEL], FIXED_BASE_IMAGE);
    assert.equal(base.Config.Labels?.[BASE_SUCCESSOR_LABEL], undefined, "not on the base: images built FROM it would inherit it");
    const appInv = await inventory(APP_IMAGE);
    assert.equal(appInv.packages.find((p) => p.name === "libc6")?.layerId, base.RootFS.Layers[0], "libc6 belongs to the base layer");
  });

  it("is not rebuilt while its recipe stays the same", async () => {
    const again = await ensureDemoImages(eng.docker);
    assert.equal(again.built, false);
  });
});
