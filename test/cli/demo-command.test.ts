/**
 * `shadowlayer demo` as a user runs it, the real CLI against a real mTLS aggregator: it starts the
 * workload, adds the demo feeds with the admin certificate (shown as demo in `feeds`), and says
 * what to watch next; with no aggregator it still starts the workload and says how to load the
 * feeds later.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { DEMO_FEEDS } from "../../cli/demo-feed.js";
import { DEMO_LABEL } from "../../cli/demo-images.js";
import { SERVICE_LABELS, SERVICE_PORT_ENV } from "../../agent/actions/switchover/service-labels.js";
import { startMtlsAggregator, type MtlsAggregator } from "../aggregator/mtls-aggregator.js";
import { testEngine, type TestEngine } from "../harness/engine.js";

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, "dist/cli/main.js");

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const { port } = s.address() as { port: number };
  await new Promise((resolve) => s.close(resolve));
  return port;
}

describe("shadowlayer demo", () => {
  let eng: TestEngine;
  let m: MtlsAggregator;
  let dir: string;
  let port: number;
  const cli = async (...args: string[]) => run(process.execPath, [CLI, ...args], { env: { ...process.env, SHADOWLAYER_DATA_DIR: join(dir, "data") } });
  const demoContainers = async () => (await eng.docker.listContainers({ filters: { label: [`${DEMO_LABEL}=demo`] } })).map((c) => c.Names[0]).sort();

  before(async () => {
    eng = await testEngine();
    dir = await mkdtemp(join(tmpdir(), "sl-demo-"));
    m = await startMtlsAggregator({ nodes: ["node-a"] });
    port = await freePort();
  });
  after(async () => {
    await cli("demo", "--down").catch(() => undefined);
    await m?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("starts the workload, adds the demo feeds and says what to watch", async () => {
    const { stdout } = await cli("demo", "--port", String(port), "--aggregator", m.address, "--tls-dir", m.tlsDir);
    assert.match(stdout, /started shadowlayer-demo-web/);
    assert.match(stdout, /loaded the demo feeds \(demo-osv 1 record\(s\), demo-kev 1 record\(s\)\): DEBIAN-CVE-2023-4911/);
    assert.match(stdout, /policy shadowlayer-demo set for the demo's containers: rebuild at risk 40, switch at 45/);
    assert.match(stdout, /`shadowlayer history` both switched over/);
    assert.match(stdout, /`shadowlayer scores`/);
    assert.equal(m.agg.scores.listPolicies().find((p) => p.name === "shadowlayer-demo")?.labels[DEMO_LABEL], "demo");
    assert.match(stdout, /`shadowlayer rebuilds` a `rebase` shadow of shadowlayer-demo\/app:1 onto shadowlayer-demo\/base:2/);
    assert.deepEqual(await demoContainers(), ["/shadowlayer-demo-data", "/shadowlayer-demo-load", "/shadowlayer-demo-web", "/shadowlayer-demo-worker"]);
    // The web server is a managed service: the proxy's stable address on --port, itself on the next port.
    const web = await eng.docker.getContainer("shadowlayer-demo-web").inspect();
    assert.equal(web.Config.Labels[SERVICE_LABELS.address], `127.0.0.1:${port}`);
    assert.equal(web.Config.Labels[SERVICE_LABELS.port], String(port + 1));
    assert.ok(web.Config.Env.includes(`${SERVICE_PORT_ENV}=${port + 1}`));
    const osv = m.agg.feeds.states().find((f) => f.config.name === DEMO_FEEDS.osv);
    assert.equal(osv?.demo, true);
    assert.equal(osv?.config.source, join(dir, "data", "demo-feed", "osv"), "read from the files the demo wrote under its data dir");
    const feeds = await cli("feeds", "--aggregator", m.address, "--tls-dir", m.tlsDir);
    assert.match(feeds.stdout, /demo-osv \(demo\)/);
    assert.match(feeds.stdout, /\(demo\): fixture records `shadowlayer demo` loaded/);
    const json = JSON.parse((await cli("feeds", "--json", "--aggregator", m.address, "--tls-dir", m.tlsDir)).stdout) as Array<{ name: string; demo: boolean }>;
    assert.deepEqual(json.map((f) => [f.name, f.demo]).sort(), [["demo-kev", true], ["demo-osv", true]]);
  });

  it("with no aggregator, starts the workload all the same and says how to load the feeds", async () => {
    // The data dir has no endpoint file: no `up` runs there.
    const { stdout } = await cli("demo", "--port", String(port));
    assert.match(stdout, /started shadowlayer-demo-worker/);
    assert.match(stdout, /the demo feeds \(demo-osv and demo-kev\) and policy could not be loaded: no running shadowlayer found/);
    assert.match(stdout, /to load them, start `shadowlayer up`.* and run `shadowlayer demo` again/);
    assert.equal((await demoContainers()).length, 4);
    const down = await cli("demo", "--down");
    assert.match(down.stdout, /removed 4 demo containers/);
    assert.deepEqual(await demoContainers(), []);
  });
});
