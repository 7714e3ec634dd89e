/**
 * `rebase` on a real engine: an app image on base v1 (libc6 2.36-9+deb12u1, vulnerable to the
 * real DEBIAN-CVE-2023-4911 record) rebased onto v2 (deb12u3): the app layers' diffIDs are the
 * same, v2's are at the bottom, the labels say so, and the re-scan (in place and from a saved
 * archive, as for a remote builder) finds the fixed version, which the matcher no longer flags.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseOsvRecord } from "../../aggregator/feeds/parse/osv.js";
import { imageFacts } from "../../aggregator/rebuild/image-facts.js";
import { rescanImage } from "../../aggregator/rebuild/image-rescan.js";
import { BASE_SUCCESSOR_LABEL, rebaseStrategy } from "../../aggregator/rebuild/strategies/rebase.js";
import { SHADOW_LABELS, SOURCE_LABELS } from "../../aggregator/rebuild/types.js";
import { VulnIndex } from "../../aggregator/vulns/index.js";
import { matchInventory } from "../../aggregator/vulns/matcher.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import type { ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { FIXED_GLIBC, strategyContext, useRebuildImages, VULNERABLE_GLIBC } from "../harness/rebuild-images.js";
import { tempDir } from "../harness/temp-dir.js";

const ADVISORY = "DEBIAN-CVE-2023-4911";

function fixtureIndex(): VulnIndex {
  const item = parseOsvRecord(JSON.parse(readFileSync(join(PACKAGE_ROOT, "test/fixtures/feeds/osv-dir/debian", `${ADVISORY}.json`), "utf8")));
  assert.ok(item.ok);
  const index = new VulnIndex();
  index.replaceOsvFeed("osv", new Map([[item.record.id, VulnIndex.compile(item.record)]]));
  return index;
}

const libc = (inv: ImageInventory) => inv.packages.filter((p) => p.name === "libc6").map((p) => `${p.name} ${p.version} (${p.sourceName})`);

describe("rebuild strategy: rebase", () => {
  const work = tempDir("sl-rebase-");
  const fx = useRebuildImages();

  it("rebases the app onto the fixed base: app layers byte for byte, the advisory gone in the re-scan", async () => {
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    const v1 = await imageFacts(fx.builder.docker, fx.images.baseV1);
    const v2 = await imageFacts(fx.builder.docker, fx.images.baseV2);
    assert.equal(src.diffIds.length, v1.diffIds.length + 3, "the app has three layers above its base");
    const baseMap = { [fx.images.baseV1]: fx.images.baseV2 };
    const why = rebaseStrategy.applies(src, [ADVISORY], { baseMap });
    assert.match(why ?? "", new RegExp(`${SOURCE_LABELS.baseName.replace(/\./g, "\\.")}=.*base:1.*base:2`));
    assert.equal(rebaseStrategy.applies(src, ["drift"], { baseMap }), undefined, "a rebase keeps tampered layers: not for drift");
    assert.equal(rebaseStrategy.applies(src, [ADVISORY], { baseMap: {} }), undefined);
    const hostile = { ...src, labels: { ...src.labels, [SOURCE_LABELS.baseName]: "__proto__" } };
    assert.equal(rebaseStrategy.applies(hostile, [ADVISORY], { baseMap }), undefined, "a label is a name, not a key into the mapping's prototype");

    const started = performance.now();
    const r = await rebaseStrategy.run(strategyContext(fx.builder, src, join(work.path, "run"), { baseMap }));
    const seconds = (performance.now() - started) / 1000;
    fx.made.push(r.imageId);
    console.log(`rebase of the 3-layer app: ${seconds.toFixed(2)} s`);

    const out = await imageFacts(fx.builder.docker, r.imageId);
    const appLayers = src.diffIds.slice(v1.diffIds.length);
    assert.deepEqual(out.diffIds, [...v2.diffIds, ...appLayers]);
    assert.deepEqual(r.layerIds, out.diffIds);
    assert.equal(r.layersReused, 3);
    assert.equal(out.labels[SOURCE_LABELS.baseName], fx.images.baseV2);
    assert.equal(out.labels[SHADOW_LABELS.strategy], "test");
    assert.equal(out.labels[SOURCE_LABELS.recipeDockerfile], "Dockerfile", "the source's own labels are kept");
    assert.equal(out.history.length, v2.history.length + (src.history.length - v1.history.length));

    const index = fixtureIndex();
    const before = await rescanImage(fx.builder, src.imageId, join(work.path, "scan-src"));
    assert.deepEqual(libc(before), [`libc6 ${VULNERABLE_GLIBC} (glibc)`]);
    assert.deepEqual(matchInventory(index, before).map((m) => m.id), [ADVISORY], "the source is vulnerable");
    const inPlace = await rescanImage(fx.builder, r.imageId, join(work.path, "scan-local"));
    const { localRoot: _root, ...remote } = fx.builder;
    const fromArchive = await rescanImage(remote, r.imageId, join(work.path, "scan-remote"));
    for (const inv of [inPlace, fromArchive]) {
      assert.equal(inv.os?.id, "debian");
      assert.deepEqual(libc(inv), [`libc6 ${FIXED_GLIBC} (glibc)`]);
      assert.deepEqual(inv.layerIds, out.diffIds);
      assert.equal(inv.packages.find((p) => p.name === "libc6")?.layerId, v2.diffIds.at(-1), "libc6 comes from the new base's top layer");
      assert.deepEqual(matchInventory(index, inv), [], "the rebased image no longer matches the advisory");
    }
  });

  it("takes the newer base from the image's successor label when the policy maps none", async () => {
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    const v2 = await imageFacts(fx.builder.docker, fx.images.baseV2);
    const labelled = { ...src, labels: { ...src.labels, [BASE_SUCCESSOR_LABEL]: fx.images.baseV2 } };
    assert.match(rebaseStrategy.applies(labelled, [ADVISORY], { baseMap: {} }) ?? "", /base:2 \(label shadowlayer\.base\.successor\)/);
    const r = await rebaseStrategy.run(strategyContext(fx.builder, labelled, join(work.path, "successor")));
    fx.made.push(r.imageId);
    assert.deepEqual(r.layerIds.slice(0, v2.diffIds.length), v2.diffIds);
    assert.deepEqual(r.layerIds.slice(v2.diffIds.length), src.diffIds.slice(-3));
    const onV2 = { ...labelled, labels: { ...labelled.labels, [SOURCE_LABELS.baseName]: fx.images.baseV2 } };
    assert.equal(rebaseStrategy.applies(onV2, [ADVISORY], { baseMap: {} }), undefined, "already on the base its label names");
  });

  it("refuses an image that is not built on the base it names", async () => {
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    const lying = { ...src, labels: { ...src.labels, [SOURCE_LABELS.baseName]: fx.images.baseV2 } };
    await assert.rejects(rebaseStrategy.run(strategyContext(fx.builder, lying, join(work.path, "lie"), { baseMap: { [fx.images.baseV2]: fx.images.baseV1 } })), (err: Error) => {
      assert.match(err.message, /is not built on .*base:2/);
      return true;
    });
  });

  it("never pulls a base a label names: a successor from a label must already be on the builder", async () => {
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    const remote = "127.0.0.1:9/nowhere/base:2";
    const viaLabel = { ...src, labels: { ...src.labels, [SOURCE_LABELS.baseName]: remote } };
    await assert.rejects(rebaseStrategy.run(strategyContext(fx.builder, viaLabel, join(work.path, "pull"))), /127\.0\.0\.1:9\/nowhere\/base:2 is not on the builder \(only names the policy configures are pulled\)/);
  });

  it("fails clearly when no newer base is known", async () => {
    const src = await imageFacts(fx.builder.docker, fx.images.app);
    await assert.rejects(rebaseStrategy.run(strategyContext(fx.builder, src, join(work.path, "none"))), /no newer base for .*base:1/);
  });
});
