/**
 * The agent's L4 proxy on real loopback sockets: busybox httpd backends swapped under load with no
 * failed request, holds that serve after the swap and refuse past their bounds, dials retried
 * until a late backend listens, long-lived connections drained to their end or cut at the
 * deadline, and the listener's own errors.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { get as httpGet } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, afterEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code } from "../../common/errors.js";
import { TcpProxy, type TcpProxyOptions } from "../../agent/actions/traffic/tcp-proxy.js";
import type { Backend } from "../../agent/actions/traffic/traffic-redirect.js";
import { rejectsWithCode } from "../harness/rejects-with-code.js";
import { tempDir } from "../harness/temp-dir.js";

const HOST = "127.0.0.1";

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, HOST, r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Polls until something accepts on `port` (bounded). */
async function untilListening(port: number, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = connect(port, HOST, () => {
        c.destroy();
        r(true);
      });
      c.on("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on ${port}`);
    await sleep(20);
  }
}

interface Httpd {
  backend: Backend;
  proc: ChildProcess;
}

/** A busybox httpd on `port` serving /who, a file that names it. */
async function startHttpd(root: string, name: string, port: number): Promise<Httpd> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "who"), name);
  const proc = spawn("/bin/busybox", ["httpd", "-f", "-p", `${HOST}:${port}`, "-h", dir], { stdio: "ignore" });
  await untilListening(port);
  return { backend: { host: HOST, port, id: name }, proc };
}

function stopHttpd(h: Httpd): Promise<void> {
  if (h.proc.exitCode !== null || h.proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => {
    h.proc.once("exit", () => r());
    h.proc.kill("SIGTERM");
  });
}

/** GET /who through `port` on a fresh connection; resolves with the body. */
function who(port: number, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: HOST, port, path: "/who", agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}`))));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}

async function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const c = connect(port, HOST, () => resolve(c));
    c.once("error", reject);
  });
}

/** Writes `msg` and waits until it came back. */
function roundTrip(sock: Socket, msg: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = "";
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.includes(msg)) {
        sock.off("data", onData);
        resolve();
      }
    };
    sock.on("data", onData);
    sock.once("error", reject);
    sock.write(msg);
  });
}

function closed(sock: Socket): Promise<void> {
  return sock.destroyed ? Promise.resolve() : new Promise((r) => sock.once("close", () => r()));
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const statsOf = (p: TcpProxy, service: string) => {
  const s = p.stats().find((x) => x.service === service);
  assert.ok(s !== undefined, `no stats for ${service}`);
  return s;
};

describe("TcpProxy", () => {
  const dir = tempDir("sl-proxy-");
  const httpds: Httpd[] = [];
  const proxies: TcpProxy[] = [];
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  const proxy = (o?: TcpProxyOptions) => {
    const p = new TcpProxy(o);
    proxies.push(p);
    return p;
  };
  /** A node server on a free port as a backend named `id`. */
  const backendServer = async (id: string, onConnection: (c: Socket) => void, allowHalfOpen = false): Promise<Backend> => {
    const server = createServer({ allowHalfOpen }, (c) => {
      c.on("error", () => undefined);
      onConnection(c);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, HOST, r));
    return { host: HOST, port: (server.address() as { port: number }).port, id };
  };
  /** A proxy serving `service` on a free port. */
  const proxied = async (service: string, backend: Backend | undefined, o?: TcpProxyOptions) => {
    const p = proxy(o);
    const port = await freePort();
    await p.ensure(service, `${HOST}:${port}`, backend);
    return { p, port };
  };
  /** An echo server that counts the connections it accepted. */
  const echoServer = async (id: string) => {
    let n = 0;
    const backend = await backendServer(id, (c) => {
      n++;
      c.pipe(c);
    });
    return { backend, accepted: () => n };
  };
  const httpd = async (name: string, port?: number) => {
    const h = await startHttpd(dir.path, name, port ?? (await freePort()));
    httpds.push(h);
    return h;
  };

  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    for (const p of proxies.splice(0)) await p.close();
    for (const s of servers.splice(0)) s.close();
  });
  after(async () => {
    for (const h of httpds) await stopHttpd(h);
  });

  it("swaps busybox httpd backends under continuous load with no failed request, held gaps included", async () => {
    const a = await httpd("alpha");
    const b = await httpd("beta");
    const { p, port } = await proxied("web", a.backend);

    const TOTAL = 480;
    const SWAP_EVERY = 40;
    const SWAPS = 7;
    let started = 0;
    let completed = 0;
    let swaps = 0;
    let nextSwapAt = SWAP_EVERY;
    let heldGaps = 0;
    let heldInGaps = 0;
    let current = a.backend;
    let afterLast = false;
    const failures: string[] = [];
    const seen = new Set<string>();
    const afterLastBodies: string[] = [];
    const worker = async () => {
      while (started < TOTAL) {
        started++;
        const isAfterLast = afterLast;
        try {
          const body = await who(port);
          seen.add(body);
          if (isAfterLast) afterLastBodies.push(body);
        } catch (e) {
          failures.push(String(e));
        }
        completed++;
        if (completed >= nextSwapAt && swaps < SWAPS) {
          nextSwapAt += SWAP_EVERY;
          if (swaps % 2 === 1) {
            // An exclusive switchover's gap: new connections wait, then go to the new backend.
            p.hold("web");
            heldGaps++;
            await sleep(30);
            heldInGaps += statsOf(p, "web").held;
          }
          current = current === a.backend ? b.backend : a.backend;
          const previous = p.swap("web", current);
          assert.notEqual(previous?.id, current.id);
          swaps++;
          afterLast = swaps === SWAPS;
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);

    assert.deepEqual(failures, [], `failed requests: ${failures.slice(0, 5).join("; ")}`);
    assert.equal(completed, TOTAL);
    assert.equal(swaps, SWAPS);
    assert.equal(heldGaps, 3);
    assert.ok(heldInGaps > 0, "some requests waited in the held gaps");
    assert.deepEqual([...seen].sort(), ["alpha", "beta"]);
    assert.ok(afterLastBodies.length >= 100, `requests after the last swap: ${afterLastBodies.length}`);
    assert.ok(afterLastBodies.every((x) => x === current.id), `after the last swap every response names ${current.id}`);
    assert.equal(p.backend("web")?.id, current.id);
    await until("connections to end", () => Object.values(statsOf(p, "web").open).every((n) => n === 0));
    const s = statsOf(p, "web");
    assert.equal(s.accepted, TOTAL);
    assert.equal(s.refused, 0);
    assert.equal(s.held, 0);
  });

  it("holds new connections until the swap, then serves them in order on the new backend", async () => {
    const a = await httpd("hold-a");
    const b = await httpd("hold-b");
    const { p, port } = await proxied("web", a.backend);
    p.hold("web");
    let served = 0;
    const waiting = Array.from({ length: 5 }, () => who(port).finally(() => served++));
    await until("5 held", () => statsOf(p, "web").held === 5);
    await sleep(200);
    assert.equal(served, 0, "nothing is served while held");
    assert.equal(statsOf(p, "web").holding, true);
    assert.equal(p.swap("web", b.backend)?.id, "hold-a");
    assert.deepEqual(await Promise.all(waiting), Array(5).fill("hold-b"));
    const s = statsOf(p, "web");
    assert.equal(s.holding, false);
    assert.equal(s.refused, 0);
    assert.equal(s.held, 0);
  });

  it("forwards held connections in their arrival order", async () => {
    // Each client names itself in its first bytes; the backend lists them in the order it accepted.
    const accepted: { first: string }[] = [];
    const backend = await backendServer("fifo", (c) => {
      const slot = { first: "" };
      accepted.push(slot);
      c.once("data", (d: Buffer) => (slot.first = d.toString()));
    });
    const { p, port } = await proxied("fifo", undefined);
    for (let i = 0; i < 6; i++) {
      const c = await dial(port);
      sockets.push(c);
      c.write(`client-${i}`);
      await until(`${i + 1} held`, () => statsOf(p, "fifo").held === i + 1);
    }
    p.swap("fifo", backend);
    await until("all forwarded", () => accepted.length === 6 && accepted.every((x) => x.first !== ""));
    assert.deepEqual(
      accepted.map((x) => x.first),
      Array.from({ length: 6 }, (_, i) => `client-${i}`),
    );
    assert.equal(statsOf(p, "fifo").open["fifo"], 6);
  });

  it("a service with no backend yet holds, and a hold past its bound refuses", async () => {
    const { p, port } = await proxied("web", undefined, { holdMs: 200 });
    const c = await dial(port);
    sockets.push(c);
    c.on("error", () => undefined);
    const t0 = Date.now();
    await until("held", () => statsOf(p, "web").held === 1);
    await closed(c);
    const waited = Date.now() - t0;
    assert.ok(waited >= 150 && waited < 2000, `closed after ${waited} ms`);
    const s = statsOf(p, "web");
    assert.equal(s.refused, 1);
    assert.equal(s.held, 0);
  });

  it("refuses past maxHeld and serves the ones it held", async () => {
    const a = await httpd("max-a");
    const { p, port } = await proxied("web", undefined, { maxHeld: 2 });
    const first = [who(port), who(port)];
    await until("2 held", () => statsOf(p, "web").held === 2);
    await assert.rejects(who(port));
    assert.equal(statsOf(p, "web").refused, 1);
    assert.equal(statsOf(p, "web").held, 2);
    p.swap("web", a.backend);
    assert.deepEqual(await Promise.all(first), ["max-a", "max-a"]);
  });

  it("retries the dial until a backend that starts late listens", async () => {
    const late = await freePort();
    const { p, port } = await proxied("web", { host: HOST, port: late, id: "late" });
    const t0 = Date.now();
    const answer = who(port);
    await sleep(200);
    await httpd("late", late);
    assert.equal(await answer, "late");
    assert.ok(Date.now() - t0 >= 200);
    assert.equal(statsOf(p, "web").refused, 0);
  });

  it("serves the connections held through an exclusive gap once the new backend, swapped in before it listens, is up", async () => {
    const a = await httpd("gap-a");
    const { p, port } = await proxied("web", a.backend);
    p.hold("web");
    const waiting = Array.from({ length: 4 }, () => who(port));
    await until("4 held", () => statsOf(p, "web").held === 4);
    await stopHttpd(a);
    const late = await freePort();
    p.swap("web", { host: HOST, port: late, id: "gap-b" });
    await sleep(200);
    await httpd("gap-b", late);
    assert.deepEqual(await Promise.all(waiting), Array(4).fill("gap-b"));
    assert.equal(statsOf(p, "web").refused, 0);
  });

  it("follows a swap or a hold made while it retries, and refuses once the retry bound passes", async () => {
    const b = await httpd("retry-b");
    const dead = await freePort();
    const { p, port } = await proxied("web", { host: HOST, port: dead, id: "dead" }, { connectRetryMs: 300 });
    const answer = who(port);
    await sleep(100);
    p.swap("web", b.backend);
    assert.equal(await answer, "retry-b");
    assert.equal(statsOf(p, "web").refused, 0);

    // Held while it retries: it waits in the hold, then goes to the backend swapped in.
    p.swap("web", { host: HOST, port: dead, id: "dead" });
    const waiting = who(port);
    await sleep(50);
    p.hold("web");
    await until("the retrying connection held", () => statsOf(p, "web").held === 1);
    await sleep(400);
    p.swap("web", b.backend);
    assert.equal(await waiting, "retry-b");
    assert.equal(statsOf(p, "web").refused, 0);

    p.swap("web", { host: HOST, port: dead, id: "dead" });
    const t0 = Date.now();
    await assert.rejects(who(port));
    assert.ok(Date.now() - t0 >= 250, `refused after ${Date.now() - t0} ms`);
    assert.equal(statsOf(p, "web").refused, 1);
  });

  it("sends the client's bytes again when the backend resets before answering", async () => {
    let conns = 0;
    const flaky = await backendServer("flaky", (c) => {
      const n = ++conns;
      c.once("data", () => {
        if (n === 1) c.resetAndDestroy();
        else c.end("HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nreplayed");
      });
    });
    const { p, port } = await proxied("web", flaky);
    assert.equal(await who(port), "replayed");
    assert.equal(conns, 2);
    assert.equal(statsOf(p, "web").refused, 0);
  });

  it("keeps long-lived connections on their backend, drains them to their end, and cuts the rest at the deadline", async () => {
    const e1 = await echoServer("echo-1");
    const e2 = await echoServer("echo-2");
    const { p, port } = await proxied("echo", e1.backend);
    const old: Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await dial(port);
      sockets.push(c);
      old.push(c);
      await roundTrip(c, `hello-${i}`);
    }
    assert.equal(e1.accepted(), 3);

    p.swap("echo", e2.backend);
    const fresh = await dial(port);
    sockets.push(fresh);
    await roundTrip(fresh, "new");
    assert.equal(e2.accepted(), 1, "a new connection goes to the new backend");
    for (const [i, c] of old.entries()) await roundTrip(c, `still-${i}`);
    assert.equal(e1.accepted(), 3, "open connections stay with their backend");
    assert.deepEqual(statsOf(p, "echo").open, { "echo-1": 3, "echo-2": 1 });

    let done = false;
    const draining = p.drain("echo", "echo-1", 5000).finally(() => (done = true));
    await sleep(100);
    assert.equal(done, false, "drain waits for the open connections");
    for (const c of old) c.end();
    const r = await draining;
    assert.equal(r.drained, 3);
    assert.equal(r.cut, 0);
    assert.ok(r.waitedMs >= 100 && r.waitedMs < 5000, `waited ${r.waitedMs} ms`);
    await roundTrip(fresh, "after-drain");

    // A connection still open to echo-1 at the deadline is cut.
    p.swap("echo", e1.backend);
    const lingering = await dial(port);
    sockets.push(lingering);
    lingering.on("error", () => undefined);
    await roundTrip(lingering, "linger");
    p.swap("echo", e2.backend);
    const cut = await p.drain("echo", "echo-1", 300);
    assert.deepEqual({ drained: cut.drained, cut: cut.cut }, { drained: 0, cut: 1 });
    assert.ok(cut.waitedMs >= 250, `waited ${cut.waitedMs} ms`);
    await closed(lingering);
    assert.equal(statsOf(p, "echo").cut, 1);
    await roundTrip(fresh, "survivor");
    assert.deepEqual(await p.drain("echo", "echo-1", 1000), { drained: 0, cut: 0, waitedMs: 0 });
  });

  it("passes a half-close through: a client that ended its side still gets the whole response", async () => {
    const SIZE = 4 * 1024 * 1024;
    const bulk = await backendServer(
      "bulk",
      (c) => {
        let request = "";
        c.on("data", (d: Buffer) => (request += d.toString()));
        c.on("end", () => c.end(Buffer.alloc(SIZE, request)));
      },
      true,
    );
    const { port } = await proxied("bulk", bulk);
    const c = connect({ host: HOST, port, allowHalfOpen: true });
    sockets.push(c);
    let received = 0;
    let sample = "";
    c.on("data", (d: Buffer) => {
      received += d.length;
      if (sample === "") sample = d.subarray(0, 3).toString();
    });
    const ended = new Promise<void>((r, j) => {
      c.on("end", () => r());
      c.on("error", j);
    });
    c.end("abc");
    await ended;
    assert.equal(received, SIZE);
    assert.equal(sample, "abc");
  });

  it("passes backpressure through: a client that does not read stops the backend, not the proxy's memory", async () => {
    const TOTAL = 64 * 1024 * 1024;
    const CHUNK = Buffer.alloc(64 * 1024, 7);
    let sender: Socket | undefined;
    const backend = await backendServer("firehose", (c) => {
      sender = c;
      let sent = 0;
      const pump = () => {
        while (sent < TOTAL) {
          sent += CHUNK.length;
          if (!c.write(CHUNK)) return void c.once("drain", pump);
        }
        c.end();
      };
      pump();
    });
    const { port } = await proxied("firehose", backend);
    const c = await dial(port);
    sockets.push(c);
    c.pause();
    await until("the backend connected", () => sender !== undefined);
    await sleep(500);
    const s = sender!;
    const handedToKernel = s.bytesWritten - s.writableLength;
    // Socket buffers on both hops hold a few MB; a proxy that read on regardless would take all of it.
    assert.ok(handedToKernel < TOTAL / 2, `the backend got ${handedToKernel} bytes out while nobody read`);
    let received = 0;
    c.on("data", (d: Buffer) => (received += d.length));
    c.resume();
    await new Promise<void>((r) => c.once("end", () => r()));
    assert.equal(received, TOTAL);
  });

  it("an error on either side closes both, with no unhandled error", async () => {
    const backendClosed: Promise<void>[] = [];
    const backend = await backendServer("err", (c) => {
      backendClosed.push(closed(c));
      c.once("data", (d: Buffer) => {
        if (d.toString() === "reset") c.write("partial", () => setTimeout(() => c.resetAndDestroy(), 20));
        else c.write("ok");
      });
    });
    const { p, port } = await proxied("err", backend);

    // The backend resets after it spoke: the client's connection is closed too (not retried).
    const c1 = await dial(port);
    sockets.push(c1);
    c1.on("error", () => undefined);
    c1.resume();
    c1.write("reset");
    await closed(c1);

    // The client goes away abruptly: the backend's connection is closed too.
    const c2 = await dial(port);
    sockets.push(c2);
    await roundTrip(c2, "ok");
    c2.resetAndDestroy();
    await Promise.all(backendClosed);
    await until("no open connection", () => Object.values(statsOf(p, "err").open).every((n) => n === 0));

    // A held client that resets while it waits: on the swap its connection fails, and closes, quietly.
    p.hold("err");
    const c3 = await dial(port);
    await until("held", () => statsOf(p, "err").held === 1);
    c3.resetAndDestroy();
    await sleep(50);
    p.swap("err", backend);
    await until("the reset client's connection gone", () => statsOf(p, "err").held === 0 && Object.values(statsOf(p, "err").open).every((n) => n === 0));
    const c4 = await dial(port);
    sockets.push(c4);
    await roundTrip(c4, "ok");
  });

  it("ensure is idempotent, rejects another address or one in use, and close leaves no listener", async () => {
    const e = await echoServer("e");
    const { p, port } = await proxied("svc", e.backend);
    const listen = `${HOST}:${port}`;
    await p.ensure("svc", listen, e.backend);
    assert.equal(p.stats().length, 1);
    const c = await dial(port);
    sockets.push(c);
    await roundTrip(c, "once");

    // Again with the same backend while held: nothing changes, the hold stays.
    p.hold("svc");
    await p.ensure("svc", listen, e.backend);
    assert.equal(statsOf(p, "svc").holding, true);
    // With another backend: that is a swap, which ends the hold.
    const e2 = await echoServer("e2");
    await p.ensure("svc", listen, e2.backend);
    assert.equal(statsOf(p, "svc").holding, false);
    assert.equal(p.backend("svc")?.id, "e2");
    // Without a backend: the one set stays.
    await p.ensure("svc", listen, undefined);
    assert.equal(p.backend("svc")?.id, "e2");

    const other = await freePort();
    await rejectsWithCode(p.ensure("svc", `${HOST}:${other}`, e.backend), Code.FailedPrecondition, /remove it first/);
    await rejectsWithCode(p.ensure("bad", "not an address", e.backend), Code.InvalidArgument);
    assert.throws(() => p.swap("svc", { host: HOST, port: 70000, id: "x" }), (err: { code?: string }) => err.code === Code.InvalidArgument);
    await rejectsWithCode(p.ensure("svc", listen, { host: "", port: 1, id: "x" }), Code.InvalidArgument);
    assert.equal(p.backend("svc")?.id, "e2");

    const busy = createServer();
    servers.push(busy);
    await new Promise<void>((r) => busy.listen(0, HOST, r));
    const busyAddress = `${HOST}:${(busy.address() as { port: number }).port}`;
    await rejectsWithCode(p.ensure("taken", busyAddress, e.backend), Code.FailedPrecondition, new RegExp(`${busyAddress}.*address in use`));
    assert.deepEqual(p.stats().map((s) => s.service), ["svc"]);

    // Closed while a listener is still binding: that one does not stay behind either.
    const binding = await freePort();
    const late = p.ensure("late", `${HOST}:${binding}`, e.backend);
    await p.close();
    await late;
    assert.deepEqual(p.stats(), []);
    await assert.rejects(dial(binding), /ECONNREFUSED/);
    await closed(c);
    await assert.rejects(dial(port), /ECONNREFUSED/);
  });

  it("remove closes the listener and leaves open connections to end", async () => {
    const e = await echoServer("e");
    const { p, port } = await proxied("svc", e.backend);
    const c = await dial(port);
    sockets.push(c);
    await roundTrip(c, "before");
    await p.remove("svc");
    await assert.rejects(dial(port), /ECONNREFUSED/);
    await roundTrip(c, "after");
    assert.throws(() => p.swap("svc", e.backend), (err: { code?: string }) => err.code === Code.NotFound);
    await p.ensure("svc", `${HOST}:${port}`, e.backend);
    const again = await dial(port);
    sockets.push(again);
    await roundTrip(again, "again");
  });
});
