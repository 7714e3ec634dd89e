/**
 * One rebuild job end to end on the real engine and a real TLS registry with basic auth: a rebase
 * of the test app (base v1, vulnerable glibc) onto base v2 is re-scanned, pushed by digest,
 * labelled and signed in cosign's layout; the engine pulls it by digest and the stored signature
 * verifies. Through the scheduler, a registry that refuses the credentials fails the job with a
 * message `rebuilds` shows, and a shadow that the re-scan finds no better is failed, not ready.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Level } from "level";
import { RebuildJobSchema, RebuildState, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { VulnMatchSchema, type VulnMatch } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { generateSigningKeys, parseSigningPayload, verifySignature } from "../../common/cosign.js";
import { silentLogger } from "../../common/log.js";
import { RegistryClient } from "../../common/registry-client.js";
import { fetchSignature } from "../../common/registry-signature.js";
import { FeedManager } from "../../aggregator/feeds/manager.js";
import { startBuilderPool } from "../../aggregator/rebuild/builder-pool.js";
import { imageFacts } from "../../aggregator/rebuild/image-facts.js";
import { rescanImage } from "../../aggregator/rebuild/image-rescan.js";
import { RebuildPipeline, verdict, type PipelineOptions } from "../../aggregator/rebuild/pipeline.js";
import { RebuildScheduler } from "../../aggregator/rebuild/scheduler.js";
import { rebaseStrategy } from "../../aggregator/rebuild/strategies/rebase.js";
import { SHADOW_LABELS, type BuilderLease, type JobRunner } from "../../aggregator/rebuild/types.js";
import { matchInventory } from "../../aggregator/vulns/matcher.js";
import { renderRebuildJob } from "../../cli/rebuilds-format.js";
import { useRebuildImages } from "../harness/rebuild-images.js";
import { startRegistry, type TestRegistry } from "../harness/registry.js";
import { waitFor } from "../harness/engine.js";

const ADVISORY = "DEBIAN-CVE-2023-4911";
const FIXTURE = join(process.cwd(), "test", "fixtures", "feeds", "osv-dir", "debian");
const REPO = "shadows/pipeline";
const io: Parameters<JobRunner["run"]>[2] = { signal: new AbortController().signal, update: () => undefined, log: () => undefined };

describe("rebuild pipeline: rebase, re-scan, push by digest, sign", () => {
  const t = useRebuildImages();
  const keys = generateSigningKeys();
  let registry: TestRegistry;
  let work: string;
  let db: Level<string, Uint8Array>;
  let feeds: FeedManager;
  let before_: VulnMatch[];
  let appId: string;
  let sourceLayer: string;
  const pulled: string[] = [];

  before(async () => {
    registry = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "sl-pipeline-"));
    db = new Level<string, Uint8Array>(join(work, "db"), { valueEncoding: "view" });
    await db.open();
    feeds = await FeedManager.open(db, [{ name: "osv", kind: "osv", source: FIXTURE }], silentLogger());
    await feeds.refresh();
    const facts = await imageFacts(t.images.docker, t.images.app);
    appId = facts.imageId;
    sourceLayer = facts.diffIds[1] ?? "";
    before_ = matchInventory(feeds.index, await rescanImage(t.builder, appId, join(work, "scan")));
  });

  after(async () => {
    for (const id of pulled) await t.images.docker.getImage(id).remove({ force: true }).catch(() => undefined);
    await registry?.close();
    await db?.close();
    await rm(work, { recursive: true, force: true });
  });

  const pipelineWith = (client: RegistryClient, extra: Partial<PipelineOptions> = {}) =>
    new RebuildPipeline({
      strategies: [rebaseStrategy],
      registry: { client, host: registry.host, repository: REPO },
      signingKeyPem: keys.privateKeyPem,
      matches: () => before_,
      index: feeds.index,
      baseMap: { [t.images.baseV1]: t.images.baseV2 },
      workRoot: join(work, "jobs"),
      log: silentLogger(),
      ...extra,
    });
  const job = (id: string): RebuildJob => create(RebuildJobSchema, { id, imageId: appId, image: t.images.app, reasons: [ADVISORY], risk: 70, sourceLayer: sourceLayer });
  const lease = (): BuilderLease => ({ builder: t.builder, lost: new AbortController().signal, release: () => undefined });

  it("makes a ready shadow: app layers kept, advisory gone, labels, pushed by digest, signature verifies", async () => {
    assert.ok(before_.some((m) => m.id === ADVISORY), "the source matches the advisory");
    const client = new RegistryClient({ host: registry.host, ca: registry.ca, auth: registry.auth });
    const shadow = await pipelineWith(client).run(job("pipeline-rebase-000000000000"), lease(), io);
    t.made.push(shadow.imageId);
    assert.equal(shadow.vulnsBefore, before_.length);
    assert.equal(shadow.vulnsAfter, before_.length - 1);
    assert.equal(shadow.layersReused, 3);
    assert.match(shadow.reference, new RegExp(`^${registry.host.replace(/\./g, "\\.")}/${REPO}@sha256:[0-9a-f]{64}$`));
    assert.equal(shadow.reference.split("@")[1], shadow.manifestDigest);
    for (const k of Object.values(SHADOW_LABELS)) assert.ok(shadow.labels[k] !== undefined && shadow.labels[k] !== "", `label ${k}`);
    assert.equal(shadow.labels[SHADOW_LABELS.strategy], "rebase");
    assert.equal(shadow.labels[SHADOW_LABELS.reason], ADVISORY);
    assert.equal(shadow.labels[SHADOW_LABELS.sourceLayer], sourceLayer);
    assert.ok(shadow.addedBytes > 0n, "the new base layers are bytes the source does not have");

    // The engine pulls it by digest with the credentials; the image is the one built, its labels on it.
    await t.images.docker.getImage(shadow.imageId).remove({ force: true }).catch(() => undefined);
    const stream = await t.images.docker.pull(shadow.reference, { authconfig: { ...registry.auth, serveraddress: registry.host } });
    await new Promise<void>((resolve, reject) => t.images.docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
    const img = (await t.images.docker.getImage(shadow.reference).inspect()) as { Id: string; RootFS: { Layers: string[] }; Config: { Labels: Record<string, string> } };
    pulled.push(img.Id);
    assert.equal(img.Id, shadow.imageId);
    const src = await imageFacts(t.images.docker, appId);
    assert.deepEqual(img.RootFS.Layers.slice(-3), src.diffIds.slice(-3), "the app's layers byte for byte");
    assert.equal(img.Config.Labels[SHADOW_LABELS.sourceImage], appId);

    // The signature in the registry (tag sha256-<hex>.sig) verifies with the public key.
    const stored = await fetchSignature(client, REPO, shadow.manifestDigest);
    const id = verifySignature(stored.payload, stored.signature, keys.publicKeyPem, shadow.manifestDigest);
    assert.equal(id.dockerReference, `${registry.host}/${REPO}`);
    assert.equal(parseSigningPayload(shadow.signaturePayload).digest, shadow.manifestDigest);
    client.close();
  });

  it("the re-scan's verdict: a shadow still matching the job's advisory, or not reducing the count, is not ready", () => {
    const adv = before_.find((m) => m.id === ADVISORY);
    assert.ok(adv !== undefined);
    const other = create(VulnMatchSchema, { id: "DEBIAN-CVE-2000-0001", package: "zlib1g" });
    assert.match(verdict([ADVISORY], [adv], [adv]) ?? "", /still matches DEBIAN-CVE-2023-4911: not ready/);
    assert.match(verdict([ADVISORY], [adv], [other]) ?? "", /1 vulnerabilities before, 1 after: not reduced/);
    assert.equal(verdict([ADVISORY], [adv, other], [other]), undefined);
    // An alias names it too (a CVE id for a DEBIAN-CVE record).
    assert.match(verdict(["CVE-2023-4911"], [adv], [create(VulnMatchSchema, { id: "X", aliases: ["CVE-2023-4911"] })]) ?? "", /still matches/);
    // Drift alone: not worse is enough.
    assert.equal(verdict(["drift"], [adv], [adv]), undefined);
    assert.match(verdict(["drift"], [], [adv]) ?? "", /matches 1 vulnerabilities, the source 0/);
  });

  it("a registry that refuses the credentials fails the job with a clear error, shown by `rebuilds`", async () => {
    const bad = new RegistryClient({ host: registry.host, ca: registry.ca, auth: { username: registry.auth.username, password: "wrong" } });
    const pool = startBuilderPool({ builders: [{ name: "local", endpoint: "unix:///var/run/docker.sock", concurrency: 1, limits: {} }], log: silentLogger() });
    const qdb = new Level<string, Uint8Array>(join(work, "queue"), { valueEncoding: "view" });
    await qdb.open();
    const scheduler = await RebuildScheduler.open({ db: qdb, pool, runner: pipelineWith(bad), log: silentLogger(), retryMinMs: 60_000 });
    try {
      const id = "pipeline-badauth-00000000";
      await scheduler.applyPlan([{ id, imageId: appId, image: t.images.app, reasons: [ADVISORY], risk: 70, sourceLayer: "", sourceLayerName: "", containers: [], nodes: [] }]);
      const failed = await waitFor("the job's first attempt to fail", () => {
        const j = scheduler.get(id);
        return j !== undefined && j.attempts >= 1 && j.error !== "" && j.state !== RebuildState.RUNNING ? j : undefined;
      }, 60_000, 100);
      assert.match(failed.error, new RegExp(`registry ${registry.host.replace(/\./g, "\\.")} refused the credentials of user ${registry.auth.username}`));
      assert.equal(failed.state, RebuildState.QUEUED, "retried later with backoff");
      assert.ok(failed.steps.some((s) => s.name === "push" && s.state === "failed"));
      assert.match(renderRebuildJob(failed), /refused the credentials/);
    } finally {
      await scheduler.close();
      await pool.close();
      await qdb.close();
      bad.close();
    }
  });
});
