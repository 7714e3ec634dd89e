/**
 * Feeds into scores, in one aggregator's pieces (real level, real files, a real loopback HTTP
 * server): a feed changed on disk changes the scores with no new inventory; policies pick
 * thresholds by label; bad feed data is rejected record by record and a failing source keeps the
 * last good data and turns stale; HTTP sources are re-checked with If-None-Match.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { feedStatuses } from "../../aggregator/api/feed-statuses.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { policyFromInit } from "../../aggregator/risk/policy-schema.js";
import { ScoreEngine } from "../../aggregator/risk/score-engine.js";
import { GraphStore } from "../../aggregator/store/graph-store.js";
import { TelemetryStore } from "../../aggregator/store/telemetry-store.js";
import { silentLogger } from "../../common/log.js";
import { LayerGraphSchema, LayerKind, LayerSchema } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { ImageInventorySchema, OsReleaseSchema, PackageSchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";

const IMAGE = `sha256:${"a".repeat(64)}`;
const CONTAINER = "c".repeat(64);
const L1 = `sha256:${"1".repeat(64)}`;
const L2 = `sha256:${"2".repeat(64)}`;

const osv = (id: string, fixed: string, aliases: string[] = []) =>
  JSON.stringify({
    schema_version: "1.6.0",
    id,
    modified: new Date().toISOString(),
    aliases,
    summary: `${id} in lodash`,
    severity: [{ type: "CVSS_V3", score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" }],
    affected: [{ package: { ecosystem: "npm", name: "lodash" }, ranges: [{ type: "SEMVER", events: [{ introduced: "0" }, { fixed }] }] }],
  });

const kev = (cves: string[]) =>
  JSON.stringify({
    title: "CISA Catalog of Known Exploited Vulnerabilities",
    catalogVersion: "2026.11.27",
    dateReleased: "2026-11-27T00:00:00.000Z",
    count: cves.length,
    vulnerabilities: cves.map((c) => ({ cveID: c, vendorProject: "v", product: "p", vulnerabilityName: "n", dateAdded: "2026-01-01", shortDescription: "d", requiredAction: "a", dueDate: "2026-02-01", knownRansomwareCampaignUse: "Known", notes: "", cwes: [] })),
  });

describe("feeds into scores", () => {
  let dir: string;
  let store: GraphStore;
  let feeds: FeedManager;
  let scores: ScoreEngine;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-feeds-"));
    await mkdir(join(dir, "osv"));
    await writeFile(join(dir, "osv", "GHSA-1.json"), osv("GHSA-1", "4.17.21", ["CVE-2020-8203"]));
    await writeFile(join(dir, "osv", "broken.json"), "{ not json");
    // An npm advisory whose fix is not a semver version: it cannot be evaluated, so it is refused.
    await writeFile(join(dir, "osv", "GHSA-bad.json"), osv("GHSA-bad", "not a version at all"));
    await writeFile(join(dir, "kev.json"), kev([]));
    store = await GraphStore.open(join(dir, "store"));
    const telemetry = await TelemetryStore.open(store.db);
    feeds = await FeedManager.open(
      store.db,
      [
        { name: "osv", kind: "osv", source: join(dir, "osv") },
        { name: "kev", kind: "kev", source: join(dir, "kev.json") },
        { name: "down", kind: "epss", source: "http://127.0.0.1:9/epss.csv.gz", maxAgeMs: 1 },
      ],
      silentLogger(),
    );
    scores = await ScoreEngine.open({ db: store.db, graphs: store, telemetry, feeds, log: silentLogger(), policies: [policyFromInit({ name: "prod", labels: { env: "prod" }, rebuild_threshold: 5, switch_threshold: 95 })] });
    await store.putGraph(
      create(LayerGraphSchema, {
        containerId: CONTAINER,
        containerName: "web",
        imageId: IMAGE,
        image: "web:1",
        node: "n1",
        labels: { env: "prod" },
        layers: [create(LayerSchema, { layerId: L1, kind: LayerKind.IMAGE, name: "base" }), create(LayerSchema, { layerId: L2, kind: LayerKind.IMAGE, name: "npm install" })],
      }),
    );
    await scores.putInventory(
      create(ImageInventorySchema, {
        imageId: IMAGE,
        os: create(OsReleaseSchema, { id: "debian", versionId: "12" }),
        packages: [create(PackageSchema, { type: "npm", name: "lodash", version: "4.17.20", layerId: L2, path: "/app/node_modules/lodash/package.json" })],
        layerIds: [L1, L2],
      }),
      "node-a",
    );
  });
  after(async () => {
    scores.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("scores a layer from the feeds, with reasons, under the environment's policy", async () => {
    await feeds.refresh();
    const s = scores.get(CONTAINER);
    assert.ok(s !== undefined);
    const l2 = s.layers.find((l) => l.layerId === L2);
    assert.ok((l2?.threat ?? 0) > 0, "the npm layer carries the vulnerability");
    assert.equal(s.layers.find((l) => l.layerId === L1)?.threat, 0);
    assert.equal(l2?.reasons[0]?.id, "GHSA-1");
    assert.match(l2?.reasons[0]?.detail ?? "", /lodash 4\.17\.20 \(fixed in 4\.17\.21\), CVSS 9\.8 \(osv\), no EPSS/);
    // CVSS 9.8 × exploit 0.1 (no EPSS) × fix 1.0.
    assert.ok(Math.abs(s.risk - 9.8) < 1e-9, `risk ${s.risk}`);
    assert.equal(s.policy?.name, "prod");
    // prod rebuilds at 5, the default only at 60: the decision is prod's.
    assert.equal(s.rebuild, true);
    assert.equal(s.switch, false);
  });

  it("rejects bad records with reasons and keeps the rest", () => {
    const st = feedStatuses(feeds).find((f) => f.name === "osv");
    assert.equal(st?.state, "ok");
    assert.equal(st?.records, 1n);
    assert.equal(st?.rejected, 2n, "the broken file and the unparseable version");
    assert.equal(st?.rejectedByReason["unparseable version"], 1n);
    assert.equal(Object.values(st?.rejectedByReason ?? {}).reduce((a, b) => a + b, 0n), 2n);
    assert.ok(feeds.states()[0]?.meta.samples.some((x) => x.startsWith("GHSA-bad: unparseable version (npm lodash: range 0: fixed \"not a version at all\"")), "the sample names the record and why");
  });

  it("a source that does not answer keeps the last good data and turns stale", () => {
    const st = feedStatuses(feeds).find((f) => f.name === "down");
    assert.equal(st?.state, "error");
    assert.match(st?.error ?? "", /did not answer/);
    assert.equal(st?.stale, true);
  });

  it("a feed changed on disk changes the scores without a new inventory", async () => {
    const before = scores.get(CONTAINER);
    const inv = scores.inventory(IMAGE);
    // KEV now lists the advisory's CVE: the threat rises, with the reason.
    await writeFile(join(dir, "kev.json"), kev(["CVE-2020-8203"]));
    await feeds.refresh("kev");
    await new Promise((r) => setTimeout(r, 250));
    const withKev = scores.get(CONTAINER);
    assert.ok((withKev?.threat ?? 0) > (before?.threat ?? 0), `${withKev?.threat} > ${before?.threat}`);
    assert.match(withKev?.layers.find((l) => l.layerId === L2)?.reasons[0]?.detail ?? "", /KEV, ransomware/);
    // The advisory is corrected: 4.17.20 was never affected. The layer's threat drops to 0.
    await writeFile(join(dir, "osv", "GHSA-1.json"), osv("GHSA-1", "4.17.19", ["CVE-2020-8203"]));
    await feeds.refresh("osv");
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(scores.get(CONTAINER)?.threat, 0);
    assert.equal(scores.inventory(IMAGE), inv, "the same stored inventory: nothing was rescanned");
  });

  it("a source that turns to garbage keeps the last good data", async () => {
    const recordsBefore = feedStatuses(feeds).find((f) => f.name === "kev")?.records;
    await writeFile(join(dir, "kev.json"), "<html>maintenance</html>");
    await feeds.refresh("kev");
    const st = feedStatuses(feeds).find((f) => f.name === "kev");
    assert.equal(st?.state, "error");
    assert.equal(st?.records, recordsBefore);
    assert.equal(feeds.index.kev.has("CVE-2020-8203"), true);
  });

  it("changing a policy recomputes the decision at once", async () => {
    await writeFile(join(dir, "osv", "GHSA-1.json"), osv("GHSA-1", "4.17.21", ["CVE-2020-8203"]));
    await feeds.refresh("osv");
    await new Promise((r) => setTimeout(r, 250));
    const risk = scores.get(CONTAINER)?.risk ?? 0;
    assert.ok(risk > 0);
    await scores.setPolicy(policyFromInit({ name: "prod", labels: { env: "prod" }, rebuild_threshold: Math.min(100, risk + 1), switch_threshold: 100 }));
    assert.equal(scores.get(CONTAINER)?.rebuild, false);
    await scores.setPolicy(policyFromInit({ name: "prod", labels: { env: "prod" }, rebuild_threshold: Math.max(0, risk - 1), switch_threshold: 100 }));
    assert.equal(scores.get(CONTAINER)?.rebuild, true);
    assert.throws(() => policyFromInit({ name: "bad", rebuild_threshold: 90, switch_threshold: 10 }), /switch_threshold/);
  });
});

describe("feed sources", () => {
  it("re-checks an HTTP source with If-None-Match and keeps its data on 304", async () => {
    const seen: Array<string | undefined> = [];
    const body = kev(["CVE-2024-0001", "CVE-2024-0002"]);
    const server: Server = createServer((req, res) => {
      seen.push(req.headers["if-none-match"]);
      if (req.headers["if-none-match"] === '"v1"') {
        res.writeHead(304).end();
        return;
      }
      res.writeHead(200, { etag: '"v1"', "content-type": "application/json" }).end(body);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const dir = await mkdtemp(join(tmpdir(), "sl-feeds-http-"));
    const store = await GraphStore.open(join(dir, "store"));
    try {
      const feeds = await FeedManager.open(store.db, [{ name: "kev", kind: "kev", source: `http://127.0.0.1:${port}/kev.json` }], silentLogger());
      await feeds.refresh();
      await feeds.refresh();
      assert.deepEqual(seen, [undefined, '"v1"']);
      const st = feedStatuses(feeds)[0];
      assert.equal(st?.state, "ok");
      assert.equal(st?.records, 2n);
      assert.equal(feeds.index.kev.size, 2);
      // A restarted aggregator has the data from level before any refresh.
      const again = await FeedManager.open(store.db, [{ name: "kev", kind: "kev", source: `http://127.0.0.1:${port}/kev.json` }], silentLogger());
      assert.equal(again.index.kev.size, 2);
    } finally {
      server.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
