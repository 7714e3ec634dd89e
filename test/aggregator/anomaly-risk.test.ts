/**
 * The anomaly model's verdicts in risk: an alerting verdict on a layer raises its container's risk
 * and gives an `anomaly` reason naming the feature; a verdict that is not alerting is shown
 * (has_anomaly, the score) but moves no risk; a stale one counts as absent. Through a real
 * aggregator (real gRPC, real level, a test agent's stream) and on the pure scoring, the rebuild
 * plan (`performance-anomaly`, the feature in the job's note) and the switchover reason.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AnomalySchema, TelemetryItemSchema, WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { PolicySchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger } from "../../common/log.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { scoreContainer, type LayerAnomaly } from "../../aggregator/risk/score-container.js";
import { ANOMALY_REASON, planRebuilds } from "../../aggregator/rebuild/rebuild-plan.js";
import { proactiveReason } from "../../aggregator/control/proactive-trigger.js";
import { anomalyFreshUntil } from "../../aggregator/vulns/scoring.js";
import { renderScores, scoresJson } from "../../cli/vulns-format.js";
import { renderTop } from "../../cli/telemetry-format.js";
import { waitFor } from "../harness/engine.js";
import { connectAgent, type AgentStream } from "../harness/agent-stream.js";
import { containerIdOf, testGraph, upsertOf } from "../harness/test-graphs.js";
import { tempDir } from "../harness/temp-dir.js";

const BASE = `sha256:${"a".repeat(64)}`;
const NODE = "anomaly-node";
const ID = containerIdOf(1, 0xa0);

type AnomalyInit = MessageInitShape<typeof AnomalySchema>;
const burn = (alerting: boolean, score = 82): AnomalyInit => ({
  score,
  alerting,
  modelVersion: "2026-11-28T09:00:00.000Z-0badc0de",
  reasons: [
    { feature: "cpu_seconds.rate", sigma: 7.34, contribution: 0.8, value: 0.9, baseline: 0.01 },
    { feature: "ctx_switches_involuntary.rate", sigma: 3.1, contribution: 0.1, value: 50, baseline: 2 },
  ],
});

describe("anomaly verdicts in the scores (pure)", () => {
  const g = testGraph(ID, NODE, { containerName: "web" });
  const policy = create(PolicySchema, { name: "default", rebuildThreshold: 60, switchThreshold: 85 });
  const now = new Date("2026-11-28T10:00:00Z");
  const facts = (a: LayerAnomaly | undefined) => ({
    graph: g,
    inventory: undefined,
    matches: undefined,
    feedsLoaded: true,
    drift: undefined,
    anomaly: a === undefined ? undefined : new Map([[BASE, a]]),
    policy,
    now,
  });
  const verdict = (alerting: boolean, freshUntil = new Date(now.getTime() + 30_000)): LayerAnomaly => {
    const b = burn(alerting);
    return { anomaly: { score: b.score ?? 0, alerting, generic: false, modelVersion: b.modelVersion ?? "", reasons: (b.reasons ?? []).map((r) => ({ feature: r.feature ?? "", sigma: r.sigma ?? 0 })) }, freshUntil };
  };

  it("an alerting verdict is the anomaly term, with a reason naming the feature", () => {
    const s = scoreContainer(facts(verdict(true)));
    const l = s.layers.find((x) => x.layerId === BASE);
    assert.equal(l?.hasAnomaly, true);
    assert.equal(l?.anomaly, 82);
    assert.equal(l?.risk, 82);
    assert.equal(s.risk, 82);
    assert.equal(s.rebuild, true);
    const r = l?.reasons[0];
    assert.equal(r?.kind, "anomaly");
    assert.equal(r?.id, "cpu_seconds.rate");
    assert.equal(r?.detail, "cpu_seconds.rate 7.3σ above baseline (score 82, model 2026-11-28T09:00:00.000Z-0badc0de)");
    // The other layer has no verdict.
    assert.equal(s.layers.find((x) => x.layerId !== BASE)?.hasAnomaly, false);

    const plans = planRebuilds([s], [g]);
    assert.deepEqual(plans[0]?.reasons, [ANOMALY_REASON]);
    assert.deepEqual(plans[0]?.notes, ["performance-anomaly: cpu_seconds.rate 7.3σ above baseline (score 82, model 2026-11-28T09:00:00.000Z-0badc0de) on layer base of web"]);
    assert.match(proactiveReason(s), /: performance-anomaly \(cpu_seconds\.rate 7\.3σ above baseline/);
  });

  it("a verdict that is not alerting is shown but moves no risk and asks for nothing", () => {
    const s = scoreContainer(facts(verdict(false)));
    const l = s.layers.find((x) => x.layerId === BASE);
    assert.equal(l?.hasAnomaly, true);
    assert.equal(l?.anomaly, 82);
    assert.equal(l?.risk, 0);
    assert.deepEqual(l?.reasons, []);
    assert.deepEqual(planRebuilds([s], [g]), []);
  });

  it("shows in `scores` (the score, ! and the feature while alerting) and in `top`", () => {
    const alerting = scoreContainer(facts(verdict(true)));
    const table = renderScores([alerting]);
    assert.match(table, /ANOMALY/);
    assert.match(table, /82! cpu_seconds\.rate/);
    assert.match(table, /cpu_seconds\.rate 7\.3σ above baseline \(score 82, model 2026-11-28T09:00:00\.000Z-0badc0de\) on /);
    const calm = renderScores([scoreContainer(facts(verdict(false)))]);
    assert.match(calm, / 82 /);
    assert.doesNotMatch(calm, /82!/);
    const json = scoresJson(alerting) as { layers: Array<{ layer_id: string; anomaly: number | null; anomaly_alerting: boolean }> };
    assert.deepEqual(json.layers.map((l) => [l.anomaly, l.anomaly_alerting]), [[82, true], [null, false]]);
    const w = create(WindowSummarySchema, {
      node: NODE,
      containerId: ID,
      containerName: "web",
      start: timestampFromDate(new Date(now.getTime() - 10_000)),
      end: timestampFromDate(now),
      layers: [{ layerId: BASE, layerName: "base", processes: 1, cpuSeconds: 9, anomaly: burn(true) }],
    });
    assert.match(renderTop([w]), /ANOMALY[\s\S]*82! cpu_seconds\.rate/);
  });

  it("a stale verdict counts as absent", () => {
    const s = scoreContainer(facts(verdict(true, new Date(now.getTime() - 1))));
    const l = s.layers.find((x) => x.layerId === BASE);
    assert.equal(l?.hasAnomaly, false);
    assert.equal(l?.anomaly, 0);
    assert.equal(l?.risk, 0);
  });

  it("stays fresh for three windows after the window's end, by the aggregator's clock when the agent's runs ahead", () => {
    const arrived = new Date("2026-11-28T10:00:00Z");
    assert.equal(anomalyFreshUntil(new Date("2026-11-28T09:59:59Z"), 10, arrived).toISOString(), "2026-11-28T10:00:29.000Z");
    assert.equal(anomalyFreshUntil(new Date("2026-11-28T11:00:00Z"), 10, arrived).toISOString(), "2026-11-28T10:00:30.000Z");
    assert.equal(anomalyFreshUntil(undefined, Number.NaN, arrived).toISOString(), "2026-11-28T10:00:30.000Z");
  });
});

describe("anomaly verdicts in the scores (aggregator, test agent)", () => {
  const dir = tempDir("sl-anomaly-");
  let agg: RunningAggregator;
  let client: grpc.Client;
  let agent: AgentStream;
  let seq = 0n;

  /** A window of `seconds` ending `endAgoMs` ago, the base layer carrying `anomaly`. */
  const sendWindow = async (anomaly: AnomalyInit | undefined, seconds = 10, endAgoMs = 0) => {
    const end = Date.now() - endAgoMs;
    const w = create(WindowSummarySchema, {
      node: NODE,
      containerId: ID,
      containerName: "web",
      start: timestampFromDate(new Date(end - seconds * 1000)),
      end: timestampFromDate(new Date(end)),
      layers: [{ layerId: BASE, layerName: "base", ...(anomaly !== undefined ? { anomaly } : {}) }],
    });
    seq++;
    await agent.send({ case: "telemetry", value: create(TelemetryItemSchema, { spoolId: "sp", spoolSeq: seq, body: { case: "windows", value: { windows: [w] } } }) });
  };
  const layer = () => agg.scores.get(ID)?.layers.find((l) => l.layerId === BASE);

  before(async () => {
    agg = await startAggregator({ dataDir: join(dir.path, "agg"), listen: "127.0.0.1:0", tls: "insecure", log: silentLogger() });
    client = makeClient(AgentService, `127.0.0.1:${agg.port}`, channelCredentials("insecure"));
    agent = await connectAgent(client, NODE);
    await agent.send(upsertOf(testGraph(ID, NODE, { containerName: "web" })));
    await waitFor("scored", () => agg.scores.get(ID));
  });
  after(async () => {
    agent.close();
    client.close();
    await agg.stop();
  });

  it("an alerting verdict raises the container's risk and names the feature", async () => {
    assert.equal(agg.scores.get(ID)?.risk, 0);
    await sendWindow(burn(true));
    const l = await waitFor("anomaly in risk", () => (layer()?.hasAnomaly === true ? layer() : undefined));
    assert.equal(l.risk, 82);
    assert.equal(agg.scores.get(ID)?.risk, 82);
    assert.equal(l.reasons[0]?.kind, "anomaly");
    assert.equal(l.reasons[0]?.id, "cpu_seconds.rate");
    assert.match(l.reasons[0]?.detail ?? "", /^cpu_seconds\.rate 7\.3σ above baseline \(score 82, model /);
  });

  it("a verdict that is not alerting keeps has_anomaly and the score, and no risk", async () => {
    await sendWindow(burn(false, 44));
    const l = await waitFor("calm verdict", () => (layer()?.anomaly === 44 ? layer() : undefined));
    assert.equal(l.hasAnomaly, true);
    assert.equal(l.risk, 0);
    assert.equal(agg.scores.get(ID)?.risk, 0);
    assert.equal(l.reasons.length, 0);
  });

  it("a verdict goes stale after three windows' length, and one from long ago never counts", async () => {
    await sendWindow(burn(true), 1);
    await waitFor("alerting again", () => (layer()?.risk === 82 ? true : undefined));
    // A 1 s window: stale 3 s after it ended, when the engine looks at the container again by itself.
    const l = await waitFor("stale", () => (layer()?.hasAnomaly === false ? layer() : undefined), 8000);
    assert.equal(l.risk, 0);
    assert.equal(l.anomaly, 0);
    await sendWindow(burn(true), 10, 60_000);
    await sendWindow(undefined);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(layer()?.hasAnomaly, false, "a window that ended a minute ago is stale on arrival");
    assert.equal(agg.scores.get(ID)?.risk, 0);
  });
});
