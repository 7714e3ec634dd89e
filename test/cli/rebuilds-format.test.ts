/**
 * `rebuilds` output: the table, the builders and the destination, and one job in detail. Image
 * names, labels, log lines, step details and builder errors come from images and engines an
 * attacker may control: none reaches the terminal raw, and the JSON keeps them exact.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { BuilderStatusSchema, RebuildJobSchema, RebuildState, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { destinationLine, rebuildJobJson, renderBuilders, renderRebuildJob, renderRebuilds, renderRebuildsView, shortDuration } from "../../cli/rebuilds-format.js";

const RAW = /[\p{Cc}\p{Bidi_Control}]/u;
const HOSTILE = "x\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\n$(rm -rf /)";
const SHOWN = "x\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\n$(rm -rf /)";
const NOW = Date.parse("2026-11-28T00:00:00Z");
const at = (msAgo: number) => timestampFromDate(new Date(NOW - msAgo));

function job(over: MessageInitShape<typeof RebuildJobSchema> & { id: string }): RebuildJob {
  return create(RebuildJobSchema, {
    imageId: `sha256:${"e".repeat(64)}`,
    image: "example/app:1",
    reasons: ["CVE-2024-0727"],
    risk: 70,
    state: RebuildState.QUEUED,
    createdAt: at(90_000),
    updatedAt: at(60_000),
    ...over,
  });
}

const lines = (s: string) => s.split("\n");
const noRaw = (s: string) => {
  for (const l of lines(s)) assert.doesNotMatch(l, RAW, `raw control in ${JSON.stringify(l)}`);
};

describe("rebuilds format", () => {
  it("lists running work first, the queue by risk, with strategy, progress, reasons, builder, age and shadow", () => {
    const out = renderRebuilds(
      [
        job({ id: "aaaaaaaaaaaaaaaaaaaaaaaa", risk: 40 }),
        job({ id: "bbbbbbbbbbbbbbbbbbbbbbbb", risk: 90, state: RebuildState.RUNNING, strategy: "rebase", progress: 40, builder: "local", reasons: ["CVE-1", "CVE-2", "CVE-3", "CVE-4", "drift"] }),
        job({ id: "cccccccccccccccccccccccc", risk: 80, state: RebuildState.READY, strategy: "recipe", progress: 100, shadow: { reference: "sha256:1234", localOnly: true } }),
        job({ id: "dddddddddddddddddddddddd", risk: 60, attempts: 1, error: "RUN failed", nextAttemptAt: timestampFromDate(new Date(NOW + 120_000)) }),
      ],
      NOW,
    );
    const rows = lines(out);
    assert.match(rows[0] ?? "", /^JOB\s+IMAGE\s+STRATEGY\s+STATE\s+PROGRESS\s+RISK\s+REASONS\s+BUILDER\s+AGE\s+SHADOW$/);
    assert.deepEqual(
      rows.slice(1).map((r) => r.slice(0, 12)),
      ["bbbbbbbbbbbb", "dddddddddddd", "aaaaaaaaaaaa", "cccccccccccc"],
    );
    assert.match(rows[1] ?? "", /rebase\s+running\s+40%\s+90\.0\s+CVE-1,CVE-2,CVE-3 \+2\s+local\s+1m/);
    assert.match(rows[2] ?? "", /queued \(retry 2 in 2m\)/);
    assert.match(rows[4] ?? "", /ready .*sha256:1234 \(local\)/);
  });

  it("escapes hostile image names, reasons, builder errors and destinations in the table", () => {
    const view = renderRebuildsView(
      {
        jobs: [job({ id: "aaaaaaaaaaaaaaaaaaaaaaaa", image: HOSTILE, reasons: [HOSTILE], builder: HOSTILE })],
        builders: [create(BuilderStatusSchema, { name: HOSTILE, endpoint: "tcp://10.0.0.1:2376", healthy: false, error: HOSTILE, concurrency: 2, running: 1, limits: HOSTILE })],
        destination: `registry ${HOSTILE}`,
        counts: { queued: 1, running: 0 },
      },
      NOW,
    );
    noRaw(view);
    assert.ok(view.includes(SHOWN), "shown as visible text");
    assert.match(view, /jobs: 1 queued/);
    assert.match(view, /unhealthy: x\\x1b/);
    assert.match(view, /1\/2 running/);
  });

  it("says that shadows stay in the local engine when no registry is configured", () => {
    assert.equal(destinationLine("local engine (no registry configured)"), "shadows stay in the local engine (no registry configured)");
    assert.equal(destinationLine("registry 127.0.0.1:5000/shadows (TLS, basic auth)"), "shadows are pushed to registry 127.0.0.1:5000/shadows (TLS, basic auth)");
    assert.match(renderBuilders([create(BuilderStatusSchema, { name: "local", endpoint: "unix:///var/run/docker.sock", healthy: true, concurrency: 1, running: 0, limits: "cpuset 1, cpu 50%, memory 1 GiB" })]), /local {2}healthy {2}0\/1 running {2}limits: cpuset 1, cpu 50%, memory 1 GiB/);
  });

  it("shows one job in detail: each step's timing, the shadow's labels, preparations and the log tail, all escaped; JSON keeps the exact strings", () => {
    const j = job({
      id: "aaaaaaaaaaaaaaaaaaaaaaaa",
      image: HOSTILE,
      state: RebuildState.FAILED,
      attempts: 5,
      error: HOSTILE,
      strategy: "rebase",
      strategyReason: `base from label ${HOSTILE}`,
      steps: [
        { name: "fetch", state: "ok", startedAt: at(50_000), durationMs: 1200, detail: "saved 5 layers" },
        { name: "build", state: "failed", startedAt: at(48_000), durationMs: 3400, detail: HOSTILE },
      ],
      logTail: ["Step 1/3 : FROM base", HOSTILE],
      shadow: { reference: "sha256:abcd", labels: { "shadowlayer.reason": HOSTILE }, localOnly: true },
      preparations: [{ node: "n1", containerId: "0123456789abcdef", state: "refused", message: HOSTILE }],
    });
    const out = renderRebuildJob(j, NOW);
    noRaw(out);
    assert.match(out, /failed \(5 attempts\)/);
    assert.match(out, /fetch\s+ok\s+2026-11-27T23:59:10\.000Z\s+1\.2s\s+saved 5 layers/);
    assert.match(out, /build\s+failed\s+.*3\.4s/);
    assert.match(out, /log tail \(2 lines\):\n {2}\| Step 1\/3 : FROM base\n {2}\| x\\x1b/);
    assert.match(out, /label shadowlayer\.reason=x\\x1b/);
    assert.match(out, /n1\s+0123456789ab\s+refused/);
    const json = JSON.stringify(rebuildJobJson(j));
    assert.equal((JSON.parse(json) as { image: string }).image, HOSTILE, "JSON keeps the exact string");
    assert.doesNotMatch(json, /[\x00-\x1f]/, "JSON writes C0 controls (ESC included) as \\u00XX");
  });

  it("writes durations as people read them", () => {
    assert.deepEqual([shortDuration(850), shortDuration(1200), shortDuration(45_000), shortDuration(240_000), shortDuration(3 * 3_600_000), shortDuration(2 * 86_400_000)], ["850ms", "1.2s", "45s", "4m", "3h", "2d"]);
  });
});
