/**
 * The switchover state machine on the real engine, with the real proxy, journal and level: busybox
 * httpd services (host network, loopback ports) switched to their prepared shadows under a bounded
 * loopback load, rolled back automatically (failed health gate, a shadow exiting while observed)
 * and by hand (also when the original was removed), exclusive mode with appends to a bind mount,
 * long-lived connections drained or cut, the engine cut mid-switch, and two switchovers at once.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type Docker from "dockerode";
import { SERVICE_LABELS, SERVICE_PORT_ENV } from "../../agent/actions/switchover/service-labels.js";
import { SNAPSHOT_LABELS } from "../../agent/actions/switchover/switchover-machine.js";
import { connectEngine } from "../../common/engine.js";
import { silentLogger } from "../../common/log.js";
import { CommandStatus } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { DataMode, SwitchoverKind, SwitchoverOutcome, SwitchoverTrigger, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { cleanupContainers, testEngine, waitFor } from "../harness/engine.js";
import { getOnce, HttpLoad } from "../harness/http-load.js";
import { SocketRelay } from "../harness/socket-relay.js";
import { switchoverRig, type SwitchoverRig } from "../harness/switchover-rig.js";
import { prepareTestShadow, removeSnapshots, startService, type TestService } from "../harness/switchover-services.js";
import { tempDir } from "../harness/temp-dir.js";

const log = silentLogger();
const tmp = tempDir("sl-switch-test-");
let docker: Docker;
let app: string;
let rig: SwitchoverRig;
const originals: string[] = [];
let n = 0;

before(async () => {
  ({ docker, app } = await testEngine());
  rig = await switchoverRig(docker, log);
});

after(async () => {
  await rig.close();
  await cleanupContainers(docker);
  await removeSnapshots(docker, originals);
});

/** A service behind the proxy, serving, with a prepared shadow (`shadowCmd` replaces its command). */
async function servedService(o: { shadowCmd?: string[]; binds?: string[]; labels?: Record<string, string> } = {}, via: SwitchoverRig = rig): Promise<TestService & { shadowId: string }> {
  // The proxy listens before the container exists: another agent on this engine may serve every labelled service it sees.
  const beforeCreate = (address: string) => via.proxy.ensure(address, address, undefined);
  const svc = await startService(docker, app, { name: `sl-switch-${process.pid}-${++n}`, beforeCreate, ...(o.binds ? { binds: o.binds } : {}), ...(o.labels ? { labels: o.labels } : {}) });
  originals.push(svc.container.Id);
  await via.proxy.ensure(svc.address, svc.address, { host: "127.0.0.1", port: svc.port, id: svc.container.Id });
  await waitFor("the original to serve", async () => (await getOnce("127.0.0.1", svc.listenPort)).body === String(svc.port) || undefined);
  const shadowId = await prepareTestShadow(docker, svc.container, app, o.shadowCmd);
  return { ...svc, shadowId };
}

const served = async (svc: TestService) => (await getOnce("127.0.0.1", svc.listenPort)).body;
const stepNames = (r: SwitchoverRecord) => r.steps.map((s) => s.name);
const state = async (id: string) => (await docker.getContainer(id).inspect()).State;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function recordOf(r: { switchover?: SwitchoverRecord | undefined }): SwitchoverRecord {
  assert.ok(r.switchover, "the command result carries the record");
  return r.switchover;
}

describe("switchover", { concurrency: false }, () => {
  test("shared: under continuous load through the proxy no request fails, the shadow serves after, the original is kept stopped, the snapshot image is labelled", async () => {
    const svc = await servedService();
    const prepared = await docker.getContainer(svc.shadowId).inspect();
    assert.equal(prepared.Config.Labels?.[SERVICE_LABELS.port], String(svc.shadowPort), "the shadow's port labels are swapped");
    assert.equal(prepared.Config.Labels?.[SERVICE_LABELS.shadowPort], String(svc.port));
    assert.deepEqual(prepared.Config.Env.filter((e) => e.startsWith(`${SERVICE_PORT_ENV}=`)), [`${SERVICE_PORT_ENV}=${svc.shadowPort}`]);
    const load = new HttpLoad({ host: "127.0.0.1", port: svc.listenPort, concurrency: 4, maxMs: 30_000 });
    await sleep(300);
    const r = await rig.switchover({ containerId: svc.container.Id, reason: "test: risk", observeMs: 800 });
    await sleep(400);
    const results = await load.stop();
    assert.equal(r.status, CommandStatus.OK, r.message);
    const rec = recordOf(r);
    assert.equal(rec.outcome, SwitchoverOutcome.OBSERVING);
    assert.equal(rec.mode, DataMode.SHARED);
    assert.deepEqual(stepNames(rec), ["snapshot", "start-shadow", "health-gate", "redirect", "drain", "stop-original", "commit", "observe"]);
    assert.ok(rec.steps.slice(0, -1).every((s) => s.state === "done" && s.durationMs >= 0), rec.steps.map((x) => `${x.name}:${x.state}`).join(" "));
    assert.equal(rec.steps.at(-1)?.state, "running", "the observation goes on after the command returns");
    assert.ok(rec.switchMs > 0 && rec.switchMs < 5000, `switch_ms ${rec.switchMs}`);
    assert.ok(results.length > 50, `only ${results.length} requests`);
    assert.deepEqual(
      load.failed.map((f) => f.error || f.status),
      [],
    );
    assert.ok(results.some((x) => x.body === String(svc.port)) && results.some((x) => x.body === String(svc.shadowPort)), "both served during the load");
    assert.equal(results.at(-1)?.body, String(svc.shadowPort));
    assert.equal(await served(svc), String(svc.shadowPort));
    const orig = await state(svc.container.Id);
    assert.equal(orig.Running, false, "the original is stopped");
    const img = await docker.getImage(rec.snapshotImage).inspect();
    assert.equal(img.Config.Labels?.[SNAPSHOT_LABELS.of], svc.container.Id);
    assert.equal(img.Config.Labels?.[SNAPSHOT_LABELS.reason], "test: risk");
    assert.ok(!Number.isNaN(Date.parse(img.Config.Labels?.[SNAPSHOT_LABELS.at] ?? "")));
    const final = await waitFor("the observation to end", () => (rig.records.get(rec.id)?.outcome === SwitchoverOutcome.SUCCEEDED ? rig.records.get(rec.id) : undefined), 10_000);
    assert.equal(final.steps.at(-1)?.name, "observe");
    assert.ok(final.finishedAt, "finished time set");
    const journaled = rig.journal.entry(rec.id);
    assert.equal(journaled?.result?.switchover?.outcome, SwitchoverOutcome.OBSERVING, "the journal keeps the record the command returned");
    assert.equal(rec.outcome, SwitchoverOutcome.OBSERVING, "the returned record is a copy");
  });

  test("long-lived connections in flight are drained to their end, or cut at the drain deadline", async () => {
    const svc = await servedService();
    const open = (): Promise<Socket> =>
      new Promise((resolve, reject) => {
        const s = connect({ host: "127.0.0.1", port: svc.listenPort }, () => resolve(s));
        s.once("error", reject);
      });
    const reply = (s: Socket) =>
      new Promise<string>((resolve) => {
        let data = "";
        s.on("data", (d: Buffer) => (data += d.toString()));
        s.on("close", () => resolve(data));
        s.on("error", () => undefined);
      });
    const finishing = await open();
    const lingering = await open();
    finishing.write("GET / HTTP/1.0\r\n");
    lingering.write("GET / HTTP/1.0\r\n");
    const finishingReply = reply(finishing);
    const lingeringReply = reply(lingering);
    await sleep(200);
    const switching = rig.switchover({ containerId: svc.container.Id, drainTimeoutMs: 2500, observeMs: 300 });
    await waitFor("the redirect", () => rig.records.all().find((x) => x.containerId === svc.container.Id && x.steps.some((s) => s.name === "drain")));
    assert.equal(await served(svc), String(svc.shadowPort), "new connections reach the shadow while the old ones drain");
    finishing.write("\r\n");
    const body = await finishingReply;
    assert.match(body, /200 OK/);
    assert.equal(body.trim().split("\n").at(-1)?.trim(), String(svc.port), "the connection opened before the switch ended on the original");
    const r = await switching;
    const rec = recordOf(r);
    assert.equal(rec.connectionsDrained, 1);
    assert.equal(rec.connectionsCut, 1);
    assert.equal(await lingeringReply, "", "the connection still open at the deadline was closed");
    const drain = rec.steps.find((s) => s.name === "drain");
    assert.ok((drain?.durationMs ?? 0) >= 2000, `drain waited to its deadline: ${drain?.durationMs}`);
  });

  test("exclusive (a writable bind): every acknowledged append is on the volume after the switch", async () => {
    const svc = await servedService({ binds: [`${tmp.path}:/data`] });
    const load = new HttpLoad({ host: "127.0.0.1", port: svc.listenPort, path: (i) => `/cgi-bin/append?n${i}`, concurrency: 4, maxMs: 30_000, timeoutMs: 15_000 });
    await sleep(400);
    const r = await rig.switchover({ containerId: svc.container.Id, observeMs: 300 });
    await sleep(400);
    const results = await load.stop();
    assert.equal(r.status, CommandStatus.OK, r.message);
    const rec = recordOf(r);
    assert.equal(rec.mode, DataMode.EXCLUSIVE);
    assert.deepEqual(stepNames(rec), ["snapshot", "hold", "drain", "stop-original", "start-shadow", "health-gate", "redirect", "commit", "observe"]);
    assert.deepEqual(
      load.failed.map((f) => `${f.path}: ${f.error || f.status}`),
      [],
    );
    const acked = results.filter((x) => x.ok && x.body === "ok").map((x) => x.path.split("?")[1]);
    assert.ok(acked.length > 30, `only ${acked.length} appends`);
    const lines = new Set((await readFile(join(tmp.path, "log"), "utf8")).split("\n"));
    assert.deepEqual(
      acked.filter((a) => !lines.has(a ?? "")),
      [],
      "acknowledged appends missing from the volume",
    );
    assert.equal(await served(svc), String(svc.shadowPort));
  });

  test("a shadow that fails its health gate is rolled back automatically; the original serves again and no request fails", async () => {
    const svc = await servedService({ shadowCmd: ["sleep", "3600"] });
    const load = new HttpLoad({ host: "127.0.0.1", port: svc.listenPort, concurrency: 2, maxMs: 30_000 });
    const r = await rig.switchover({ containerId: svc.container.Id, healthTimeoutMs: 1200 });
    await sleep(200);
    await load.stop();
    assert.equal(r.status, CommandStatus.FAILED);
    const rec = recordOf(r);
    assert.equal(rec.outcome, SwitchoverOutcome.ROLLED_BACK);
    assert.match(rec.error, /not ready within 1200 ms/);
    assert.deepEqual(stepNames(rec), ["snapshot", "start-shadow", "health-gate", "stop-shadow", "start-original", "health-gate-original", "redirect-back"]);
    assert.equal(rec.steps.find((s) => s.name === "health-gate")?.state, "failed");
    assert.deepEqual(load.failed, []);
    assert.equal(await served(svc), String(svc.port));
    assert.equal((await state(svc.shadowId)).Running, false, "the shadow is stopped");
    assert.equal((await state(svc.container.Id)).Running, true);
  });

  test("a shadow that exits within the observation window is rolled back automatically", async () => {
    const exits = ["sh", "-c", 'mkdir -p /w && echo "$SHADOWLAYER_PORT" > /w/index.html && httpd -p "127.0.0.1:$SHADOWLAYER_PORT" -h /w && sleep 4 && exit 3'];
    const svc = await servedService({ shadowCmd: exits });
    const r = await rig.switchover({ containerId: svc.container.Id, observeMs: 15_000 });
    assert.equal(r.status, CommandStatus.OK, r.message);
    assert.equal(await served(svc), String(svc.shadowPort));
    const id = recordOf(r).id;
    const back = await waitFor("the automatic rollback", () => rig.records.all().find((x) => x.rollbackOf === id && x.outcome === SwitchoverOutcome.SUCCEEDED), 15_000);
    assert.equal(back.kind, SwitchoverKind.ROLLBACK);
    assert.equal(back.trigger, SwitchoverTrigger.AUTOMATIC);
    assert.match(back.reason, /exited/);
    const sw = rig.records.get(id);
    assert.equal(sw?.outcome, SwitchoverOutcome.ROLLED_BACK);
    assert.equal(sw?.steps.at(-1)?.name, "observe");
    assert.equal(sw?.steps.at(-1)?.state, "failed");
    assert.equal(await served(svc), String(svc.port));
  });

  test("manual rollback restores the original; with the original removed, it is recreated from the snapshot image", async () => {
    const svc = await servedService();
    const first = recordOf(await rig.switchover({ containerId: svc.container.Id, observeMs: 200 }));
    await waitFor("the first switchover to succeed", () => rig.records.get(first.id)?.outcome === SwitchoverOutcome.SUCCEEDED || undefined);
    const back = await rig.rollback({ containerId: svc.container.Name.replace(/^\//, ""), reason: "operator" });
    assert.equal(back.status, CommandStatus.OK, back.message);
    const rb = recordOf(back);
    assert.equal(rb.kind, SwitchoverKind.ROLLBACK);
    assert.equal(rb.rollbackOf, first.id);
    assert.equal(rb.trigger, SwitchoverTrigger.MANUAL);
    assert.deepEqual(stepNames(rb), ["start-original", "health-gate", "redirect", "drain-shadow", "stop-shadow"]);
    assert.equal(await served(svc), String(svc.port));
    assert.equal(rig.records.get(first.id)?.outcome, SwitchoverOutcome.ROLLED_BACK);
    assert.equal((await state(svc.shadowId)).Running, false);

    // Again, then the original is removed before the rollback.
    await prepareTestShadow(docker, svc.container, app, undefined, "-2");
    const second = recordOf(await rig.switchover({ containerId: svc.container.Id, observeMs: 200 }));
    assert.equal(second.outcome, SwitchoverOutcome.OBSERVING, second.error);
    await docker.getContainer(svc.container.Id).remove({ force: true });
    const again = await rig.rollback({ containerId: svc.container.Id });
    assert.equal(again.status, CommandStatus.OK, again.message);
    const rb2 = recordOf(again);
    assert.match(rb2.steps.find((s) => s.name === "start-original")?.message ?? "", /recreated from the snapshot image/);
    assert.notEqual(rb2.containerId, svc.container.Id);
    const recreated = await docker.getContainer(rb2.containerId).inspect();
    assert.equal(recreated.Config.Image, second.snapshotImage);
    assert.equal(recreated.Name, svc.container.Name);
    assert.equal(await served(svc), String(svc.port));
  });

  test("two switchovers of one container at once: one runs, the other is REJECTED 'already running'; an unknown container is REJECTED", async () => {
    const svc = await servedService();
    await prepareTestShadow(docker, svc.container, app, undefined, "-b");
    const [a, b] = await Promise.all([rig.switchover({ containerId: svc.container.Id, observeMs: 200 }), rig.switchover({ containerId: svc.container.Id, observeMs: 200 })]);
    const statuses = [a.status, b.status].sort();
    assert.deepEqual(statuses, [CommandStatus.OK, CommandStatus.REJECTED].sort());
    const rejected = a.status === CommandStatus.REJECTED ? a : b;
    assert.match(rejected.message, /^already running/);
    assert.equal(rejected.switchover?.outcome, SwitchoverOutcome.REFUSED);
    const unknown = await rig.switchover({ containerId: "no-such-container-here" });
    assert.equal(unknown.status, CommandStatus.REJECTED);
    assert.match(unknown.message, /^no container/);
    const noRollback = await rig.rollback({ containerId: "no-such-container-here" });
    assert.equal(noRollback.status, CommandStatus.REJECTED);
    assert.match(noRollback.message, /^no container/);
  });

  test("the engine unreachable mid-switch: the step retries and the switchover resumes when the engine answers again", async () => {
    const relay = new SocketRelay(join(tmp.path, "engine.sock"));
    await relay.up();
    const viaRelay = (await connectEngine(relay.path)).docker;
    const cut = await switchoverRig(viaRelay, log);
    try {
      const svc = await servedService({}, cut);
      let cutAt = 0;
      cut.records.on("record", (r) => {
        if (cutAt === 0 && r.steps.some((s) => s.name === "start-shadow" && s.state === "running")) {
          cutAt = Date.now();
          void relay.down();
          setTimeout(() => void relay.up(), 1500);
        }
      });
      const r = await cut.switchover({ containerId: svc.container.Id, observeMs: 200 });
      assert.ok(cutAt > 0, "the engine was cut");
      assert.equal(r.status, CommandStatus.OK, r.message);
      const start = recordOf(r).steps.find((s) => s.name === "start-shadow");
      assert.equal(start?.state, "done");
      assert.ok((start?.durationMs ?? 0) >= 1000, `the step waited for the engine: ${start?.durationMs}`);
      assert.equal(await served(svc), String(svc.shadowPort));
    } finally {
      await cut.close();
      await relay.down();
    }
  });
});
