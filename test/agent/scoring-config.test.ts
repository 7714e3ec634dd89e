/**
 * The anomaly flags (agent/config.ts): --anomaly, --anomaly-warmup, --anomaly-min-windows,
 * --anomaly-workers, --anomaly-backend, their defaults and the errors for values that do not fit;
 * that `shadowlayer agent --help` lists them; and that `shadowlayer agents` shows the scoring.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { resolveAgentConfig } from "../../agent/config.js";
import { agentJson, renderAgents } from "../../cli/agents-format.js";
import { AgentSummarySchema } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { execFileP } from "../harness/engine.js";

describe("anomaly flags", () => {
  it("default: on, 30 min warm-up, 200 windows, one worker, backend auto", () => {
    assert.deepEqual(resolveAgentConfig({}, {}).agent.anomaly, { enabled: true, warmupMs: 1_800_000, minWindows: 200, workers: 1, backend: "auto" });
  });

  it("takes each flag", () => {
    const a = resolveAgentConfig({ anomaly: "off", anomalyWarmup: "90s", anomalyMinWindows: "50", anomalyWorkers: "2", anomalyBackend: "cpu" }, {}).agent.anomaly;
    assert.deepEqual(a, { enabled: false, warmupMs: 90_000, minWindows: 50, workers: 2, backend: "cpu" });
    assert.equal(resolveAgentConfig({ anomalyWarmup: "1h" }, {}).agent.anomaly?.warmupMs, 3_600_000);
    assert.equal(resolveAgentConfig({ anomalyWarmup: "250" }, {}).agent.anomaly?.warmupMs, 250);
  });

  it("refuses values that do not fit, naming the flag", () => {
    assert.throws(() => resolveAgentConfig({ anomaly: "maybe" }, {}), /--anomaly: expected on or off/);
    assert.throws(() => resolveAgentConfig({ anomalyBackend: "gpu" }, {}), /--anomaly-backend: expected one of auto, wasm, cpu, node/);
    assert.throws(() => resolveAgentConfig({ anomalyWarmup: "soon" }, {}), /--anomaly-warmup: expected a duration/);
    assert.throws(() => resolveAgentConfig({ anomalyMinWindows: "2.5" }, {}), /--anomaly-min-windows: expected a whole number/);
    assert.throws(() => resolveAgentConfig({ anomalyWorkers: "0" }, {}), /--anomaly-workers: expected at least 1/);
    assert.throws(() => resolveAgentConfig({ anomalyWorkers: "64" }, {}), /--anomaly-workers: expected at most 16/);
  });

  it("`shadowlayer agent --help` and `up --help` list them", async () => {
    for (const command of ["agent", "up"]) {
      const { stdout } = await execFileP(process.execPath, [join(import.meta.dirname, "..", "..", "cli", "main.js"), command, "--help"]);
      for (const flag of ["--anomaly <on|off>", "--anomaly-warmup <duration>", "--anomaly-min-windows <n>", "--anomaly-workers <n>", "--anomaly-backend <backend>"]) {
        assert.ok(stdout.includes(flag), `${command} --help lacks ${flag}`);
      }
    }
  });
});

describe("`shadowlayer agents` shows the anomaly scoring", () => {
  const summary = (anomaly: object) => create(AgentSummarySchema, { node: "n1", connected: true, telemetry: { execSource: "ebpf", anomaly } });
  const on = summary({
    enabled: true,
    backend: "wasm",
    backendReason: "wasm: loaded (simd)",
    windowsScored: 1234n,
    eventLoopP99Ms: 4.25,
    modelsRejected: 1n,
    lastRejection: "x: corrupt",
    models: [
      { scope: "image", scopeId: `sha256:${"1".repeat(64)}`, version: "v1", featureVersion: "layer-window-v2", trainingWindows: 300n, origin: "trained", backend: "wasm" },
      { scope: "generic", version: "g1", featureVersion: "layer-window-v2", trainingWindows: 500n, origin: "deployed", backend: "cpu" },
    ],
  });

  it("the table: backend, models, windows scored, event-loop p99", () => {
    const t = renderAgents([on, summary({ enabled: false, eventLoopP99Ms: 1 })]);
    assert.match(t, /ANOMALY\s+MODELS\s+SCORED\s+LOOP P99 MS/);
    assert.match(t, /^n1\s.*\swasm\s+1\+generic\s+1234\s+4\.3\s/m);
    assert.match(t, /^n1\s.*\soff\s+-\s+-\s+1\.0\s/m);
  });

  it("the JSON: every field of the status", () => {
    const j = agentJson(on)["anomaly"] as Record<string, unknown>;
    assert.equal(j["backend"], "wasm");
    assert.equal(j["windows_scored"], 1234);
    assert.equal(j["event_loop_p99_ms"], 4.25);
    assert.equal(j["models_rejected"], 1);
    assert.deepEqual((j["models"] as Array<Record<string, unknown>>).map((m) => [m["scope"], m["version"], m["origin"], m["training_windows"]]), [
      ["image", "v1", "trained", 300],
      ["generic", "g1", "deployed", 500],
    ]);
  });
});
