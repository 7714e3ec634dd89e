/**
 * The builder pool against the real engine: the local socket and relays of it as builders, each
 * with its own concurrency, leases handed out in call order, a relay cut (the builder "went away")
 * seen by the health check, its leases lost and new ones sent to the other builder, and the
 * builder used again once it answers. And the --builder specs, good and bad.
 */
import assert from "node:assert/strict";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { initCerts, tlsFiles } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import { silentLogger } from "../../common/log.js";
import { builderWarnings, defaultBuilder, defaultLimits, describeLimits, parseBuilderFlags, parseBuilderSpec } from "../../aggregator/rebuild/builder-config.js";
import { startBuilderPool, type BuilderPool } from "../../aggregator/rebuild/builder-pool.js";
import type { BuilderLease } from "../../aggregator/rebuild/types.js";
import { waitFor } from "../harness/engine.js";
import { SocketRelay } from "../harness/socket-relay.js";
import { tempDir } from "../harness/temp-dir.js";

const INTERVAL_MS = 300;
const never = new AbortController().signal;

/** Whether a promise has settled after the event loop had a moment to run. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setTimeout(r, 100));
  return done;
}

/** What a describe block's test starts, stopped after its tests. */
function stoppedAfter(): { pool?: BuilderPool; relay?: SocketRelay } {
  const held: { pool?: BuilderPool; relay?: SocketRelay } = {};
  after(async () => {
    await held.pool?.close();
    await held.relay?.down();
  });
  return held;
}

function statusOf(pool: BuilderPool, name: string) {
  const s = pool.status().find((b) => b.name === name);
  assert.ok(s, `status of ${name}`);
  return s;
}

describe("builder pool", () => {
  const dir = tempDir("sl-pool-");
  let relay: SocketRelay;
  let pool: BuilderPool;

  before(async () => {
    relay = new SocketRelay(join(dir.path, "docker.sock"));
    await relay.up();
    pool = startBuilderPool({
      builders: parseBuilderFlags(["unix:///var/run/docker.sock,name=local,concurrency=1", `${relay.endpoint},name=relay,concurrency=1,limits=none`], "/var/run/docker.sock"),
      log: silentLogger(),
      checkIntervalMs: INTERVAL_MS,
      checkTimeoutMs: 1000,
    });
    await pool.ready();
  });
  after(async () => {
    await pool.close();
    await relay.down();
  });

  it("checks every builder and reports it", () => {
    const [local, rel] = [statusOf(pool, "local"), statusOf(pool, "relay")];
    assert.equal(local.healthy, true, local.error);
    assert.equal(rel.healthy, true, rel.error);
    assert.match(local.engineVersion, /^\d+\./);
    assert.equal(local.endpoint, "unix:///var/run/docker.sock");
    assert.equal(local.concurrency, 1);
    assert.equal(local.running, 0);
    assert.ok(local.lastCheck !== undefined && Number(local.lastCheck.seconds) > 0);
    // A unix:// builder takes the host's default limits unless lifted.
    assert.match(local.limits, /shares 256, memory/);
    assert.equal(rel.limits, "no limits");
  });

  it("holds each builder's concurrency, serves waiters in call order and hands a released slot on", async () => {
    const a = await pool.acquire(never);
    const b = await pool.acquire(never);
    assert.notEqual(a.builder.name, b.builder.name, "two builders of concurrency 1: one lease each");
    assert.equal(statusOf(pool, "local").running, 1);
    const order: string[] = [];
    const c = pool.acquire(never).then((l) => (order.push("c"), l));
    const d = pool.acquire(never).then((l) => (order.push("d"), l));
    assert.equal(await settled(c), false, "a third lease waits while both builders are busy");
    b.release();
    b.release(); // idempotent: frees one slot, not two
    const lc = await c;
    assert.equal(lc.builder.name, b.builder.name);
    assert.equal(await settled(d), false, "the fourth still waits: the released slot went to the third");
    a.release();
    const ld = await d;
    assert.equal(ld.builder.name, a.builder.name);
    assert.deepEqual(order, ["c", "d"]);
    lc.release();
    ld.release();
    assert.equal(statusOf(pool, "local").running + statusOf(pool, "relay").running, 0);
  });

  it("honours avoid while the other builder is healthy; a cancelled wait takes no slot", async () => {
    const x = await pool.acquire(never, ["local"]);
    assert.equal(x.builder.name, "relay");
    const ac = new AbortController();
    const waiting = pool.acquire(ac.signal, ["local"]);
    assert.equal(await settled(waiting), false, "waits for the builder it does not avoid, though local is free");
    ac.abort();
    await assert.rejects(waiting, (e: unknown) => e instanceof ShadowError && e.code === Code.Cancelled);
    x.release();
    const y = await pool.acquire(never);
    const z = await pool.acquire(never);
    assert.notEqual(y.builder.name, z.builder.name, "the cancelled waiter held nothing");
    y.release();
    z.release();
  });

  it("knows a unix builder's data root", async () => {
    const l = await pool.acquire(never, ["local"]);
    assert.equal(l.builder.name, "relay");
    assert.match(l.builder.localRoot ?? "", /^\//);
    l.release();
  });

  it("skips a builder that went away, loses its leases, and uses it again once it answers", async () => {
    const onLocal = await pool.acquire(never, ["relay"]);
    const onRelay = await pool.acquire(never, ["local"]);
    assert.equal(onRelay.builder.name, "relay");
    const cutAt = Date.now();
    await relay.down();
    await waitFor("the relay's lease lost", () => onRelay.lost.aborted || undefined, 5000, 20);
    const took = Date.now() - cutAt;
    assert.ok(took <= 2 * INTERVAL_MS + 1000, `lost after ${took} ms (check interval ${INTERVAL_MS} ms)`);
    const reason: unknown = onRelay.lost.reason;
    assert.ok(reason instanceof ShadowError && reason.code === Code.BuilderUnavailable, String(reason));
    assert.match(reason.message, /builder relay failed its health check/);
    assert.equal(onLocal.lost.aborted, false, "the healthy builder's lease is kept");
    const st = statusOf(pool, "relay");
    assert.equal(st.healthy, false);
    assert.match(st.error, /docker\.sock/);

    onRelay.release();
    onLocal.release();
    // New leases go to the healthy builder only, even one that asked to avoid it.
    const first = await pool.acquire(never, ["local"]);
    assert.equal(first.builder.name, "local");
    const second = pool.acquire(never);
    assert.equal(await settled(second), false, "no second slot while the relay is away");

    await relay.up();
    const back = await second;
    assert.equal(back.builder.name, "relay", "the builder that came back is used again");
    assert.equal(statusOf(pool, "relay").healthy, true);
    assert.equal(statusOf(pool, "relay").error, "");
    first.release();
    back.release();
  });

  it("refuses new leases once closed", async () => {
    const p = startBuilderPool({ builders: [defaultBuilder("/var/run/docker.sock")], log: silentLogger(), checkIntervalMs: INTERVAL_MS });
    const held: BuilderLease = await p.acquire(never);
    const waiting = p.acquire(never);
    await p.close();
    await assert.rejects(waiting, (e: unknown) => e instanceof ShadowError && e.code === Code.BuilderUnavailable);
    assert.equal(held.lost.aborted, true);
    await assert.rejects(p.acquire(never), /closed/);
  });
});

describe("builder pool over tcp", () => {
  const held = stoppedAfter();

  it("reaches a loopback tcp:// engine (no data root: not this host's disk as far as the pool knows)", async () => {
    const relay = (held.relay = new SocketRelay("tcp"));
    await relay.up();
    const config = parseBuilderSpec(`${relay.endpoint},name=remote,concurrency=2`);
    assert.deepEqual(config.limits, {}, "a tcp:// builder has only the limits its spec sets");
    const pool = (held.pool = startBuilderPool({ builders: [config], log: silentLogger(), checkIntervalMs: INTERVAL_MS }));
    await pool.ready();
    assert.equal(statusOf(pool, "remote").healthy, true, statusOf(pool, "remote").error);
    const [l1, l2] = [await pool.acquire(never), await pool.acquire(never)];
    assert.equal(l1.builder.localRoot, undefined);
    assert.ok(await l1.builder.docker.ping());
    assert.equal(statusOf(pool, "remote").running, 2);
    l1.release();
    l2.release();
  });
});

describe("builder pool, checks at acquire time", () => {
  const dir = tempDir("sl-pool-recheck-");
  const held = stoppedAfter();

  it("checks a builder not checked recently before leasing it, and skips it if it went away", async () => {
    const relay = (held.relay = new SocketRelay(join(dir.path, "docker.sock")));
    await relay.up();
    // The timer alone would not see the cut for a minute.
    const pool = (held.pool = startBuilderPool({
      builders: [parseBuilderSpec("unix:///var/run/docker.sock,name=local"), parseBuilderSpec(`${relay.endpoint},name=relay`)],
      log: silentLogger(),
      checkIntervalMs: 60_000,
      recheckAfterMs: 100,
    }));
    await pool.ready();
    await relay.down();
    await new Promise((r) => setTimeout(r, 150));
    const l = await pool.acquire(never, ["local"]);
    assert.equal(l.builder.name, "local", "the relay failed its acquire-time check");
    assert.equal(statusOf(pool, "relay").healthy, false);
    l.release();
  });
});

describe("builder pool over tcp with TLS", () => {
  const dir = tempDir("sl-pool-tls-");
  const held = stoppedAfter();

  /** A --builder tls= directory from a certs directory's admin pair. */
  async function clientDir(certs: string, name: string): Promise<string> {
    const out = join(dir.path, name);
    await mkdir(out);
    await copyFile(join(certs, tlsFiles.caCert), join(out, "ca.pem"));
    await copyFile(join(certs, tlsFiles.roleCert("admin")), join(out, "cert.pem"));
    await copyFile(join(certs, tlsFiles.roleKey("admin")), join(out, "key.pem"));
    return out;
  }

  it("reaches an engine that requires client certificates, and not with certificates of another CA", async () => {
    const server = join(dir.path, "server");
    const other = join(dir.path, "other");
    await initCerts(server, { nodes: [] });
    await initCerts(other, { nodes: [] });
    const read = (f: string) => readFile(join(server, f));
    const relay = (held.relay = new SocketRelay("tcp", "/var/run/docker.sock", { ca: await read(tlsFiles.caCert), cert: await read(tlsFiles.aggregatorCert), key: await read(tlsFiles.aggregatorKey) }));
    await relay.up();
    const pool = (held.pool = startBuilderPool({
      builders: [parseBuilderSpec(`${relay.endpoint},name=good,tls=${await clientDir(server, "good")}`), parseBuilderSpec(`${relay.endpoint},name=stranger,tls=${await clientDir(other, "stranger")}`)],
      log: silentLogger(),
      checkIntervalMs: INTERVAL_MS,
    }));
    await pool.ready();
    assert.equal(statusOf(pool, "good").healthy, true, statusOf(pool, "good").error);
    assert.match(statusOf(pool, "good").engineVersion, /^\d+\./);
    const st = statusOf(pool, "stranger");
    assert.equal(st.healthy, false);
    assert.match(st.error, /^tcp:\/\/127\.0\.0\.1:\d+: /);
    const l = await pool.acquire(never);
    assert.equal(l.builder.name, "good");
    l.release();
  });
});

describe("--builder specs", () => {
  const dir = tempDir("sl-builder-spec-");
  const bad = (spec: string, why: RegExp) => {
    assert.throws(
      () => parseBuilderSpec(spec),
      (e: unknown) => e instanceof ShadowError && e.code === Code.InvalidArgument && e.message.startsWith(`--builder ${JSON.stringify(spec)}: `) && why.test(e.message),
      spec,
    );
  };

  it("reads an endpoint and its options", () => {
    const b = parseBuilderSpec("unix:///run/build.sock,name=b1,concurrency=3,cpuset=2-3,cpus=1.5,shares=512,memory=512m");
    assert.deepEqual(b, {
      name: "b1",
      endpoint: "unix:///run/build.sock",
      concurrency: 3,
      limits: { cpusetCpus: "2-3", cpuPeriod: 100_000, cpuQuota: 150_000, cpuShares: 512, memoryBytes: 512 * 1024 * 1024 },
    });
    assert.equal(describeLimits(b.limits), "cpuset 2-3, 1.5 CPU, shares 512, memory 512 MiB");
    assert.equal(parseBuilderSpec("tcp://[::1]:2375").name, "[::1]:2375");
  });

  it("refuses bad specs with the flag and the reason", () => {
    bad("docker.sock", /expected an endpoint unix:\/\/\/path\/to\/docker\.sock or tcp:\/\/host:port/);
    bad("unix://relative.sock", /absolute/);
    bad("tcp://build-1:99999", /expected an endpoint/);
    bad("unix:///var/run/docker.sock,concurrency=0", /concurrency="0": expected a whole number from 1 to 64/);
    bad("unix:///var/run/docker.sock,concurrency=two", /concurrency/);
    bad("unix:///var/run/docker.sock,cpus=-1", /cpus="-1"/);
    bad("unix:///var/run/docker.sock,memory=1x", /memory="1x": expected a size/);
    bad("unix:///var/run/docker.sock,memory=1k", /at least 6m/);
    bad("unix:///var/run/docker.sock,shares=1", /shares/);
    bad("unix:///var/run/docker.sock,cpuset=0;1", /cpuset/);
    bad("unix:///var/run/docker.sock,colour=red", /unknown option "colour=red"/);
    bad("unix:///var/run/docker.sock,name=a,name=b", /given twice/);
    bad("unix:///var/run/docker.sock,limits=some", /limits=none/);
    bad("unix:///var/run/docker.sock,tls=/x", /tls= is for tcp/);
    bad("unix:///var/run/docker.sock,name=a b", /name "a b"/);
    bad("tcp://build-1.example:2376", /needs tls=DIR.*root on its host/);
    bad(`tcp://build-1.example:2376,tls=${"/nonexistent-dir"}`, /cannot read ca\.pem \(ENOENT\)/);
    assert.throws(() => parseBuilderFlags(["unix:///a.sock,name=x", "unix:///b.sock,name=x"], "/var/run/docker.sock"), /the name "x" is used by another builder/);
  });

  it("reads TLS material from a directory; plain tcp only to loopback, and says it is unauthenticated", async () => {
    await mkdir(join(dir.path, "tls"));
    for (const f of ["ca.pem", "cert.pem", "key.pem"]) await writeFile(join(dir.path, "tls", f), `-----BEGIN ${f}-----\n`);
    const b = parseBuilderSpec(`tcp://build-1.example:2376,tls=${join(dir.path, "tls")}`);
    assert.equal(b.tls?.cert, "-----BEGIN cert.pem-----\n");
    assert.deepEqual(builderWarnings(b), []);
    const plain = parseBuilderSpec("tcp://127.0.0.1:2375");
    assert.match(builderWarnings(plain).join(), /unauthenticated/);
  });

  it("defaults to the local engine, concurrency 1, limited to spare the served containers", () => {
    const [d] = parseBuilderFlags([], "/run/docker.sock", { cpus: 2, memBytes: 8 * 1024 ** 3 });
    assert.deepEqual(d, {
      name: "local",
      endpoint: "unix:///run/docker.sock",
      concurrency: 1,
      limits: { cpusetCpus: "1", cpuPeriod: 100_000, cpuQuota: 50_000, cpuShares: 256, memoryBytes: 1024 ** 3 },
    });
    assert.equal(describeLimits(d?.limits ?? {}), "cpuset 1, 0.5 CPU, shares 256, memory 1 GiB");
    // One CPU: no cpuset to pin to; a small host: a quarter of its memory.
    assert.deepEqual(defaultLimits(1, 2 * 1024 ** 3), { cpuPeriod: 100_000, cpuQuota: 50_000, cpuShares: 256, memoryBytes: 512 * 1024 ** 2 });
    // A unix:// spec keeps the defaults it does not override; limits=none lifts them.
    const [o] = parseBuilderFlags(["unix:///run/docker.sock,cpus=1"], "/run/docker.sock", { cpus: 4, memBytes: 8 * 1024 ** 3 });
    assert.equal(describeLimits(o?.limits ?? {}), "cpuset 3, 1 CPU, shares 256, memory 1 GiB");
    assert.equal(o?.name, "/run/docker.sock");
    assert.equal(describeLimits(parseBuilderSpec("unix:///run/docker.sock,limits=none", defaultLimits(4, 8 * 1024 ** 3)).limits), "no limits");
  });
});
