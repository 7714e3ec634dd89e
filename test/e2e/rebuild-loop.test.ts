/**
 * The rebuild loop on the embedded default, end to end: a real aggregator with its rebuild stage
 * (the local engine as the one builder, no registry) and a real agent. A container of the demo's
 * app (built on a base whose dpkg database lists a glibc with a real published advisory) passes
 * its policy's rebuild threshold once the demo's advisory records are loaded; the scheduler plans
 * a job, the pipeline rebases the app onto the fixed base, re-scans, keeps it in the engine and
 * signs it, and the agent verifies the signature and creates (does not start) the shadow
 * container. Removing the original removes its shadow.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { RebuildState, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import type { RunningAgent } from "../../agent/agent.js";
import { SHADOW_CONTAINER_LABELS } from "../../agent/actions/shadow-containers.js";
import { policyFromInit, startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { silentLogger } from "../../common/log.js";
import { APP_IMAGE, ensureDemoImages } from "../../cli/demo-images.js";
import { writeDemoFeed } from "../../cli/demo-feed.js";
import { startLoopAgent, stopLoop } from "../harness/loop-agent.js";
import { runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

describe("rebuild loop on the embedded default (real engine, scheduler, pipeline, agent)", () => {
  let eng: TestEngine;
  let dir: string;
  let aggregator: RunningAggregator;
  let agent: RunningAgent;
  let original: Docker.Container;
  const env = `rebuild-loop-${process.pid}`;

  before(async () => {
    eng = await testEngine();
    await ensureDemoImages(eng.docker);
    dir = await mkdtemp(join(tmpdir(), "sl-rebuild-loop-"));
    const feed = await writeDemoFeed(dir);
    aggregator = await startAggregator({
      dataDir: join(dir, "agg"),
      listen: "127.0.0.1:0",
      tls: "insecure",
      log: silentLogger(),
      feeds: [
        { name: "demo-osv", kind: "osv", source: feed.osv },
        { name: "demo-kev", kind: "kev", source: feed.kev },
      ],
      policies: [policyFromInit({ name: "loop", labels: { env }, rebuild_threshold: 40, switch_threshold: 95 })],
      rebuild: { enabled: true, builders: [], dockerSocket: "/var/run/docker.sock", recipeRoots: [], baseMap: {}, keep: 3 },
    });
    await aggregator.feeds.idle();
    agent = await startLoopAgent(dir, aggregator.port, { node: "loop-node" });
    original = await runContainer(eng.docker, APP_IMAGE, ["/opt/app/bin/busybox", "sleep", "600"], { labels: { env } });
  });

  after(async () => {
    await stopLoop(eng.docker, agent, aggregator, original?.id);
    await rm(dir, { recursive: true, force: true });
  });

  it("plans, rebases, signs and prepares a shadow; the original's removal removes it", async () => {
    const ready = await waitFor(
      "a ready rebase shadow of the app prepared for the container",
      () => {
        const j = aggregator.rebuilds?.all().find((x: RebuildJob) => x.image === APP_IMAGE && x.containers.includes(original.id));
        return j !== undefined && j.state === RebuildState.READY && j.preparations.some((p) => p.containerId === original.id && p.state === "prepared") ? j : undefined;
      },
      120_000,
      250,
    );
    assert.equal(ready.strategy, "rebase");
    assert.deepEqual(ready.reasons, ["DEBIAN-CVE-2023-4911"]);
    const s = ready.shadow;
    assert.ok(s !== undefined);
    assert.equal(s.localOnly, true);
    assert.ok(s.vulnsAfter < s.vulnsBefore, `vulnerabilities ${s.vulnsBefore} -> ${s.vulnsAfter}`);
    assert.equal(s.signatureRef, "aggregator");
    const prep = ready.preparations.find((p) => p.containerId === original.id);
    assert.ok(prep !== undefined && prep.shadowContainerId !== "");
    const shadow = (await eng.docker.getContainer(prep.shadowContainerId).inspect()) as { State: { Status: string }; Image: string; Config: { Labels: Record<string, string>; Cmd: string[] } };
    assert.equal(shadow.State.Status, "created", "prepared, never started");
    assert.equal(shadow.Image, s.imageId);
    assert.equal(shadow.Config.Labels[SHADOW_CONTAINER_LABELS.shadowOf], original.id);
    assert.deepEqual(shadow.Config.Cmd, ["/opt/app/bin/busybox", "sleep", "600"], "the original's command");

    await original.remove({ force: true });
    await waitFor(
      "the shadow container removed with its original",
      async () => ((await eng.docker.listContainers({ all: true, filters: { id: [prep.shadowContainerId] } })).length === 0 ? true : undefined),
      15_000,
      200,
    );
  });
});
