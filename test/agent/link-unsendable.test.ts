/**
 * A spooled item that does not fit in one message even after capping (a window batch of many
 * containers, or one an earlier version spooled) is dropped, counted and forgotten: before, the
 * aggregator refused it, the link reconnected and sent it again, forever, and nothing after it
 * was ever delivered.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { HelloSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { LayerGraphSchema, LayerKind } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { TelemetryItemSchema, WindowSummarySchema, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { AggregatorLink } from "../../agent/link/aggregator-link.js";
import { MESSAGE_LIMIT_BYTES } from "../../agent/link/message-caps.js";
import { Spool } from "../../agent/link/spool.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { AgentState } from "../../agent/state/agent-state.js";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { initCerts, loadTls } from "../../common/certs.js";
import { silentLogger } from "../../common/log.js";
import { waitFor } from "../harness/engine.js";

const NODE = "node-a";
const CONTAINER = "c".repeat(64);
const LAYER = `sha256:${"a".repeat(64)}`;

const window = (): WindowSummary =>
  create(WindowSummarySchema, {
    node: NODE,
    containerId: CONTAINER,
    containerName: "app",
    ticks: 10,
    layers: [{ layerId: LAYER, layerName: "base", featuresF64le: new Uint8Array(53 * 8), processes: 3 }],
  });

describe("a spooled item too large for any message", () => {
  let dir: string;
  let agg: RunningAggregator;
  let state: AgentState;
  let spool: Spool;
  let link: AggregatorLink | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-unsendable-"));
    await initCerts(join(dir, "tls"), { nodes: [NODE] });
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(join(dir, "tls"), { role: "aggregator" }), log: silentLogger() });
    state = new AgentState(join(dir, "agent"), silentLogger());
    await state.start();
    spool = await Spool.open(state.spool);
  });
  after(async () => {
    link?.stop();
    await spool.close();
    await state.stop();
    await agg.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("is dropped and counted, what follows it is delivered, and the link never reconnects", async () => {
    await spool.append({ case: "windows", value: { windows: [window()] } });
    const huge = Array.from({ length: 12_000 }, window);
    await spool.append({ case: "windows", value: { windows: huge } });
    await spool.append({ case: "windows", value: { windows: [window()] } });
    const hugeBytes = toBinary(TelemetryItemSchema, create(TelemetryItemSchema, { body: { case: "windows", value: { windows: huge } } })).length;
    assert.ok(hugeBytes > MESSAGE_LIMIT_BYTES, `the batch is ${hugeBytes} bytes`);

    const metrics = new AgentMetrics();
    const start = async () => {
      link = new AggregatorLink({
        address: `127.0.0.1:${agg.port}`,
        tls: await loadTls(join(dir, "tls"), { role: "agent", node: NODE }),
        hello: () => create(HelloSchema, { node: NODE, agentVersion: "test" }),
        snapshot: () => [create(LayerGraphSchema, { containerId: CONTAINER, node: NODE, state: "running", layers: [{ layerId: LAYER, kind: LayerKind.IMAGE }] })],
        spool,
        log: silentLogger(),
        metrics,
      });
      link.start();
      await link.waitSynced();
    };
    await start();
    await waitFor("the spool emptied", () => (spool.pending === 0 ? true : undefined), 15_000);
    await waitFor("both small items stored", () => (agg.telemetry.stats(NODE).windows >= 2 ? true : undefined));
    assert.equal(agg.telemetry.stats(NODE).windows, 2, "the dropped batch stored nothing");
    const status = link?.status();
    assert.equal(status?.droppedOversize, 1n);
    assert.equal(status?.reconnects, 0n, `no reconnect (last error: ${status?.lastError})`);
    const dropped = (await metrics.linkDroppedOversize.get()).values.find((v) => v.labels.kind === "windows")?.value;
    assert.equal(dropped, 1);

    // Forgotten, not resent: a new link finds nothing waiting.
    link?.stop();
    await start();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(spool.pending, 0);
    assert.equal(link?.status().droppedOversize, 0n, "the new link had nothing to drop");
  });
});
