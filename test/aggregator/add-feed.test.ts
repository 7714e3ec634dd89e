/**
 * AdminService.AddFeed over real mTLS, with the demo's real advisories (DEBIAN-CVE-2023-4911 and
 * its KEV entry) as `shadowlayer demo` writes them: an added feed is read at once, marked demo,
 * and changes the scores of a container whose image lists the affected glibc; a KEV feed added
 * beside a configured one adds to it; a reader certificate is refused; a bad source is refused
 * with a clear error and replaces nothing; the added feeds are read again after a restart.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AdminService, QueryService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { LayerGraphSchema, LayerKind } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { ImageInventorySchema, OsReleaseSchema, PackageSchema, type FeedStatus } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { initCerts, loadTls, type TlsMaterial } from "../../common/certs.js";
import { callUnary, channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { startAggregator, type FeedConfig, type RunningAggregator } from "../../aggregator/index.js";
import { keys } from "../../aggregator/store/keys.js";
import { DEMO_FEEDS, DEMO_POLICY, writeDemoFeed, type DemoFeedFiles } from "../../cli/demo-feed.js";
import { DEMO_LABEL } from "../../cli/demo-images.js";

const NODE = "node-a";
const CONTAINER = "f".repeat(64);
const IMAGE = `sha256:${"b".repeat(64)}`;
const LAYER = `sha256:${"c".repeat(64)}`;
const KEV_FIXTURE = join(PACKAGE_ROOT, "test/fixtures/feeds/kev/known_exploited_vulnerabilities.json");
/** An entry of the real catalogue other than the demo's, for the configured KEV feed. */
const OTHER_CVE = "CVE-2025-48384";

describe("AdminService.AddFeed", () => {
  let dir: string;
  let tlsDir: string;
  let files: DemoFeedFiles;
  let configured: FeedConfig[];
  let agg: RunningAggregator;
  const clients: grpc.Client[] = [];
  const tls = {} as Record<"admin" | "reader", TlsMaterial>;

  const start = async () => {
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(tlsDir, { role: "aggregator" }), log: silentLogger(), feeds: configured });
    await agg.feeds.idle();
  };
  const client = (svc: typeof AdminService | typeof QueryService, who: keyof typeof tls) => {
    const c = makeClient(svc, `127.0.0.1:${agg.port}`, channelCredentials(tls[who]));
    clients.push(c);
    return c;
  };
  const addFeed = (req: { name: string; kind: string; source: string; demo?: boolean }, who: keyof typeof tls = "admin") => callUnary(client(AdminService, who), AdminService.method.addFeed, { demo: false, ...req });
  const listFeeds = async () => (await callUnary(client(QueryService, "reader"), QueryService.method.listFeeds, {})).feeds;
  const feed = (list: FeedStatus[], name: string) => list.find((f) => f.name === name);
  const scores = async () => {
    const r = await callUnary(client(QueryService, "reader"), QueryService.method.listScores, { container: CONTAINER });
    const s = r.containers[0];
    assert.ok(s !== undefined, "the container is scored");
    return s;
  };
  const rejects = (code: grpc.status, details: RegExp) => (err: grpc.ServiceError) => {
    assert.equal(err.code, code, err.details);
    assert.match(err.details, details);
    return true;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-add-feed-"));
    tlsDir = join(dir, "tls");
    await initCerts(tlsDir, { nodes: [NODE] });
    tls.admin = await loadTls(tlsDir, { role: "admin" });
    tls.reader = await loadTls(tlsDir, { role: "reader" });
    files = await writeDemoFeed(join(dir, "data"));
    // A configured KEV feed of one other real entry: the demo's KEV must add to it, not replace it.
    const catalogue = JSON.parse(readFileSync(KEV_FIXTURE, "utf8")) as { vulnerabilities: Array<{ cveID: string }> };
    const kev = join(dir, "kev.json");
    await writeFile(kev, JSON.stringify({ ...catalogue, count: 1, vulnerabilities: catalogue.vulnerabilities.filter((v) => v.cveID === OTHER_CVE) }));
    configured = [{ name: "kev", kind: "kev", source: kev }];
    await start();
    // A container on an image whose inventory lists the glibc the advisory affects, as the agent reports it.
    await agg.store.putGraph(
      create(LayerGraphSchema, { containerId: CONTAINER, containerName: "libc-app", node: NODE, state: "running", image: "example/libc:1", imageId: IMAGE, labels: { [DEMO_LABEL]: "demo" }, layers: [{ layerId: LAYER, name: "base", kind: LayerKind.IMAGE, index: 0 }] }),
    );
    await agg.scores.putInventory(
      create(ImageInventorySchema, {
        imageId: IMAGE,
        layerIds: [LAYER],
        os: create(OsReleaseSchema, { id: "debian", versionId: "12", codename: "bookworm" }),
        packages: [create(PackageSchema, { type: "deb", name: "libc6", version: "2.36-9+deb12u1", sourceName: "glibc", sourceVersion: "2.36-9+deb12u1", layerId: LAYER, path: "/var/lib/dpkg/status" })],
      }),
      NODE,
    );
  });
  after(async () => {
    for (const c of clients) c.close();
    await agg?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("adds the OSV record: read at once, marked demo, and the container's scores change", async () => {
    const before = await scores();
    assert.equal(before.vulns, 0, "no advisory yet");
    const r = await addFeed({ name: DEMO_FEEDS.osv, kind: "osv", source: files.osv, demo: true });
    const added = feed(r.feeds, DEMO_FEEDS.osv);
    assert.equal(added?.state, "ok", added?.error);
    assert.equal(added?.demo, true);
    assert.equal(added?.records, 1n);
    assert.equal(feed(r.feeds, "kev")?.demo, false, "a configured feed is not demo");
    const after = await scores();
    assert.equal(after.vulns, 1);
    assert.ok(after.threat > before.threat, `threat ${after.threat} > ${before.threat}`);
    assert.deepEqual(after.layers[0]?.reasons.map((x) => x.id), ["DEBIAN-CVE-2023-4911"]);
  });

  it("adds the KEV entry beside the configured KEV feed, and the threat rises past the demo policy's rebuild threshold", async () => {
    const without = (await scores()).threat;
    const r = await addFeed({ name: DEMO_FEEDS.kev, kind: "kev", source: files.kev, demo: true });
    assert.equal(feed(r.feeds, DEMO_FEEDS.kev)?.records, 1n);
    assert.equal(feed(r.feeds, DEMO_FEEDS.kev)?.demo, true);
    assert.ok(agg.feeds.index.kev.has("CVE-2023-4911"), "the demo's KEV entry is in");
    assert.ok(agg.feeds.index.kev.has(OTHER_CVE), "the configured KEV feed's entry stays");
    const withKev = (await scores()).threat;
    assert.ok(withKev > without, `a known exploited vulnerability weighs more: ${withKev} > ${without}`);
    // What the demo sets next: its containers' policy, under which this risk asks for a rebuild.
    assert.equal((await scores()).rebuild, false, "the default policy (60) does not rebuild at this risk");
    await callUnary(client(AdminService, "admin"), AdminService.method.setPolicy, { policy: { ...DEMO_POLICY, labels: { ...DEMO_POLICY.labels } } });
    const s = await scores();
    assert.equal(s.policy?.name, DEMO_POLICY.name);
    assert.ok(s.risk >= DEMO_POLICY.rebuildThreshold, `risk ${s.risk} reaches ${DEMO_POLICY.rebuildThreshold}`);
    assert.equal(s.rebuild, true);
  });

  it("refuses a reader certificate, and adds nothing", async () => {
    await assert.rejects(addFeed({ name: "sneaky", kind: "osv", source: files.osv }, "reader"), rejects(grpc.status.PERMISSION_DENIED, /AdminService needs an admin certificate/));
    assert.equal(feed(await listFeeds(), "sneaky"), undefined);
  });

  it("refuses a bad source with a clear error and replaces nothing", async () => {
    await assert.rejects(addFeed({ name: DEMO_FEEDS.osv, kind: "osv", source: "http://osv.example.com/all.zip" }), rejects(grpc.status.INVALID_ARGUMENT, /only https:\/\/ URLs \(or http:\/\/ to loopback\) are accepted/));
    await assert.rejects(addFeed({ name: DEMO_FEEDS.osv, kind: "osv", source: "demo-feed/osv" }), rejects(grpc.status.INVALID_ARGUMENT, /a path must be absolute/));
    await assert.rejects(addFeed({ name: DEMO_FEEDS.osv, kind: "cve", source: files.osv }), rejects(grpc.status.INVALID_ARGUMENT, /feed kind "cve": expected one of osv, kev, epss, nvd/));
    await assert.rejects(addFeed({ name: "a!b", kind: "osv", source: files.osv }), rejects(grpc.status.INVALID_ARGUMENT, /feed name "a!b"/));
    const missing = join(dir, "no-such-dir");
    await assert.rejects(addFeed({ name: DEMO_FEEDS.osv, kind: "osv", source: missing }), rejects(grpc.status.FAILED_PRECONDITION, new RegExp(`feed demo-osv \\(osv ${missing}\\) was not added: feed source ${missing} cannot be read \\(ENOENT`)));
    // A readable file of the wrong kind: no usable record, refused all the same.
    await assert.rejects(addFeed({ name: DEMO_FEEDS.osv, kind: "osv", source: files.kev }), rejects(grpc.status.FAILED_PRECONDITION, /was not added: refused: the source yielded no usable record.*the previous 1 records are kept/));
    const list = await listFeeds();
    const osv = feed(list, DEMO_FEEDS.osv);
    assert.equal(osv?.source, files.osv, "the source in effect is the good one");
    assert.equal(osv?.state, "ok");
    assert.equal(osv?.error, "");
    assert.equal(osv?.records, 1n);
    assert.equal(osv?.demo, true);
    assert.equal((await scores()).vulns, 1, "the advisory still matches");
    // A name never added stays absent after a failed add.
    await assert.rejects(addFeed({ name: "never", kind: "osv", source: missing }), rejects(grpc.status.FAILED_PRECONDITION, /was not added/));
    assert.equal(feed(await listFeeds(), "never"), undefined);
  });

  it("replaces a feed of the same name, and survives a restart", async () => {
    // Re-adding (the demo run twice) replaces it in place.
    const again = await addFeed({ name: DEMO_FEEDS.osv, kind: "osv", source: files.osv, demo: true });
    assert.equal(again.feeds.filter((f) => f.name === DEMO_FEEDS.osv).length, 1);
    assert.equal(feed(again.feeds, DEMO_FEEDS.osv)?.records, 1n);
    assert.equal(keys.feedConfig(DEMO_FEEDS.osv), "feedcfg!demo-osv", "the kept config's key");
    await agg.stop();
    await start();
    const list = await listFeeds();
    assert.deepEqual(list.map((f) => [f.name, f.demo, f.state, f.records]).sort(), [
      ["demo-kev", true, "ok", 1n],
      ["demo-osv", true, "ok", 1n],
      ["kev", false, "ok", 1n],
    ]);
    assert.equal(feed(list, DEMO_FEEDS.osv)?.source, files.osv);
    const s = await scores();
    assert.equal(s.vulns, 1, "the restarted aggregator matches the added advisory");
    assert.ok(agg.feeds.index.kev.has("CVE-2023-4911") && agg.feeds.index.kev.has(OTHER_CVE));
  });
});
