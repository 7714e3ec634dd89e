/**
 * The switchover loop on the embedded default, end to end: a real aggregator (rebuild stage on the
 * local engine, control, Falco intake) and a real agent (journal, state machine, L4 proxy). A
 * managed httpd service of the demo's app (its base lists a glibc with a real advisory) is under a
 * bounded loopback load through the agent's proxy. Once the advisory loads, its risk passes the
 * policy's rebuild threshold and then its switch threshold: the shadow is rebuilt, prepared, and
 * switched to proactively with no failed request. An operator's rollback brings the original back;
 * a Falco alert in Falco's own JSON shape, posted to the intake with its token, switches again,
 * while one without the token switches nothing.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { RunningAgent } from "../../agent/agent.js";
import { SERVICE_LABELS } from "../../agent/actions/switchover/service-labels.js";
import { policyFromInit, startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { silentLogger } from "../../common/log.js";
import { APP_IMAGE, ensureDemoImages } from "../../cli/demo-images.js";
import { writeDemoFeed, type DemoFeedFiles } from "../../cli/demo-feed.js";
import { SwitchoverKind, SwitchoverOutcome, SwitchoverTrigger, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { startLoopAgent, stopLoop } from "../harness/loop-agent.js";
import { testEngine, waitFor, type TestEngine } from "../harness/engine.js";
import { getOnce, HttpLoad } from "../harness/http-load.js";
import { removeSnapshots, startService, type TestService } from "../harness/switchover-services.js";

const TOKEN = "e2e-falco-token-0123456789abcdef";

/** Posts a body to the intake; resolves with the status and the answer. */
function post(port: number, body: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, path: "/v1/falco", method: "POST", headers: { "content-type": "application/json", ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) } },
      (res) => {
        let b = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (b += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: b }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

describe("switchover loop on the embedded default (real aggregator, agent, proxy, engine)", () => {
  let eng: TestEngine;
  let dir: string;
  let aggregator: RunningAggregator;
  let agent: RunningAgent;
  let svc: TestService;
  let feed: DemoFeedFiles;
  const env = `switch-loop-${process.pid}`;

  before(async () => {
    eng = await testEngine();
    await ensureDemoImages(eng.docker);
    dir = await mkdtemp(join(tmpdir(), "sl-switch-loop-"));
    feed = await writeDemoFeed(dir);
    await writeFile(join(dir, "falco.token"), `${TOKEN}\n`, { mode: 0o600 });
    aggregator = await startAggregator({
      dataDir: join(dir, "agg"),
      listen: "127.0.0.1:0",
      tls: "insecure",
      log: silentLogger(),
      policies: [policyFromInit({ name: "loop", labels: { env }, rebuild_threshold: 40, switch_threshold: 45 })],
      rebuild: { enabled: true, builders: [], dockerSocket: "/var/run/docker.sock", recipeRoots: [], baseMap: {}, keep: 3 },
      falco: { listen: "127.0.0.1:0", tokenFile: join(dir, "falco.token") },
    });
    agent = await startLoopAgent(dir, aggregator.port, {
      node: "switch-loop-node",
      // This agent serves only this test's service (others may share the engine).
      serviceFilter: (labels) => labels["env"] === env,
      switchBounds: { observeMs: 2000 },
    });
    svc = await startService(eng.docker, APP_IMAGE, { name: `sl-switch-loop-${process.pid}`, labels: { env } });
  });

  after(async () => {
    await stopLoop(eng.docker, agent, aggregator, svc?.container.Id);
    if (svc !== undefined) await removeSnapshots(eng.docker, [svc.container.Id]);
    await rm(dir, { recursive: true, force: true });
  });

  const record = (pred: (r: SwitchoverRecord) => boolean) => aggregator.switchovers.all().find(pred);
  const servedBy = async () => (await getOnce("127.0.0.1", svc.listenPort)).body;

  it("rebuilds, then switches proactively under load with no failed request; rollback and a Falco alert move it back and forth", async () => {
    await waitFor("the proxy serving the original", async () => ((await servedBy()) === String(svc.port) ? true : undefined), 15_000, 100);
    const load = new HttpLoad({ host: "127.0.0.1", port: svc.listenPort, concurrency: 2, maxMs: 150_000, maxRequests: 40_000 });
    let results;
    try {
      // The advisory arrives only now, under load.
      await aggregator.feeds.add({ config: { name: "demo-osv", kind: "osv", source: feed.osv }, demo: true });
      await aggregator.feeds.add({ config: { name: "demo-kev", kind: "kev", source: feed.kev }, demo: true });
      const switched = await waitFor(
        "a proactive switchover of the service that succeeded",
        () => record((r) => r.kind === SwitchoverKind.SWITCHOVER && r.trigger === SwitchoverTrigger.PROACTIVE && r.containerId === svc.container.Id && (r.outcome === SwitchoverOutcome.OBSERVING || r.outcome === SwitchoverOutcome.SUCCEEDED)),
        120_000,
        200,
      );
      assert.match(switched.reason, /DEBIAN-CVE-2023-4911/);
      await waitFor("the shadow serving", async () => ((await servedBy()) === String(svc.shadowPort) ? true : undefined), 10_000, 50);
    } finally {
      results = await load.stop();
    }
    assert.ok(results.length > 50, `${results.length} requests under load`);
    assert.deepEqual(
      results.filter((r) => !r.ok).map((r) => r.error || r.status),
      [],
      "no request failed",
    );
    assert.equal(results.at(-1)?.body, String(svc.shadowPort), "the last request was served by the shadow");
    const original = await eng.docker.getContainer(svc.container.Id).inspect();
    assert.equal(original.State.Running, false, "the original is stopped, kept");

    // An operator's rollback: the original serves again.
    const back = await aggregator.control.rollback({ container: svc.container.Id, trigger: SwitchoverTrigger.MANUAL, reason: "e2e rollback" });
    assert.equal(back.kind, SwitchoverKind.ROLLBACK);
    await waitFor("the original serving after the rollback", async () => ((await servedBy()) === String(svc.port) ? true : undefined), 20_000, 100);
    await waitFor("the switchover recorded as rolled back", () => record((r) => r.id === back.rollbackOf && r.outcome === SwitchoverOutcome.ROLLED_BACK), 10_000, 100);

    // A Falco alert, exactly as Falco's http_output posts it (container.id: the short id).
    const alert = JSON.stringify({
      hostname: "switch-loop-node",
      output: `12:00:00.000000000: Warning Shell spawned in a container (user=root container_id=${svc.container.Id.slice(0, 12)} shell=sh)`,
      priority: "Warning",
      rule: "Terminal shell in container",
      source: "syscall",
      tags: ["container", "shell", "mitre_execution"],
      time: new Date().toISOString(),
      output_fields: { "container.id": svc.container.Id.slice(0, 12), "container.name": svc.container.Name.slice(1), "proc.cmdline": "sh", "user.name": "root", "evt.time": Date.now() * 1e6 },
    });
    const refused = await post(aggregator.falco?.port ?? 0, alert);
    assert.equal(refused.status, 401, "no token: refused");
    assert.equal(record((r) => r.trigger === SwitchoverTrigger.FALCO), undefined, "nothing switched");
    const malformed = await post(aggregator.falco?.port ?? 0, '{"rule": 3}', TOKEN);
    assert.equal(malformed.status, 400);
    const accepted = await post(aggregator.falco?.port ?? 0, alert, TOKEN);
    assert.ok(accepted.status === 200 || accepted.status === 202, `${accepted.status} ${accepted.body}`);
    const falco = await waitFor(
      "a Falco-triggered switchover that succeeded",
      () => record((r) => r.trigger === SwitchoverTrigger.FALCO && (r.outcome === SwitchoverOutcome.OBSERVING || r.outcome === SwitchoverOutcome.SUCCEEDED)),
      30_000,
      100,
    );
    assert.match(falco.reason, /Terminal shell in container/);
    await waitFor("the shadow serving after the Falco alert", async () => ((await servedBy()) === String(svc.shadowPort) ? true : undefined), 10_000, 100);
    assert.equal((await eng.docker.getContainer(svc.container.Id).inspect()).Config.Labels[SERVICE_LABELS.address], svc.address);

    // The service goes away (original and shadow removed): its stable address is no longer served.
    // Only once the switchover has left its observation window: a shadow removed while observed is
    // a failed switchover, rolled back by bringing the original back (which would serve again).
    await waitFor("the Falco switchover past its observation window", () => record((r) => r.id === falco.id && r.outcome === SwitchoverOutcome.SUCCEEDED), 10_000, 100);
    for (const c of await eng.docker.listContainers({ all: true, filters: { label: [`${SERVICE_LABELS.address}=${svc.address}`] } })) await eng.docker.getContainer(c.Id).remove({ force: true });
    await waitFor("the stable address closed", async () => ((await getOnce("127.0.0.1", svc.listenPort, "/", 2000)).error.includes("ECONNREFUSED") ? true : undefined), 15_000, 200);
  });
});
