/**
 * The agent's own network namespace read through sock_diag gives the same sockets as its /proc
 * tables (state, addresses, inode), without the text of every TIME_WAIT socket, whose number
 * comes from sockstat instead.
 */
import assert from "node:assert/strict";
import { readdirSync, readlinkSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { NetSampler } from "../../agent/telemetry/net-sampler.js";
import { sockstatTimeWait } from "../../agent/telemetry/tcp-diag.js";

/** Socket inodes this process holds. */
function ownSocketInodes(): Set<number> {
  const out = new Set<number>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m?.[1] !== undefined) out.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

const listen = (host: string): Promise<Server> =>
  new Promise((resolve, reject) => {
    const srv = createServer((c) => c.on("error", () => undefined));
    srv.once("error", reject);
    srv.listen(0, host, () => resolve(srv));
  });

const dial = (host: string, port: number): Promise<Socket> =>
  new Promise((resolve, reject) => {
    const c = connect(port, host, () => resolve(c));
    c.once("error", reject);
  });

const portOf = (s: Server) => (s.address() as { port: number }).port;

describe("TCP sockets through sock_diag", () => {
  const servers: Server[] = [];
  const open: Socket[] = [];
  const SHORT = 200;

  before(async () => {
    servers.push(await listen("127.0.0.1"));
    const v6 = await listen("::1").catch(() => undefined);
    if (v6 !== undefined) servers.push(v6);
    for (const srv of servers) {
      const host = srv === servers[0] ? "127.0.0.1" : "::1";
      for (let i = 0; i < 2; i++) open.push(await dial(host, portOf(srv)));
    }
    // Connections this side closes first: each leaves a TIME_WAIT socket here for a minute.
    for (let i = 0; i < SHORT; i++) {
      const c = await dial("127.0.0.1", portOf(servers[0]!));
      await new Promise<void>((r) => c.end(r));
    }
    await new Promise((r) => setTimeout(r, 200));
  });
  after(() => {
    for (const c of open) c.destroy();
    for (const s of servers) s.close();
  });

  it("match the /proc tables socket for socket, TIME_WAIT counted from sockstat", () => {
    const diag = new NetSampler();
    const proc = new NetSampler({ sockDiag: false });
    const a = diag.sample(process.pid, 1);
    const b = proc.sample(process.pid, 1);
    assert.ok(a !== undefined && b !== undefined);
    assert.equal(diag.tcpSource, "sock_diag");
    assert.equal(proc.tcpSource, "proc");
    const mine = ownSocketInodes();
    const pick = (s: NonNullable<typeof a>) => [...s.tcpSockets].filter(([inode]) => mine.has(inode)).sort(([x], [y]) => x - y);
    const viaDiag = pick(a);
    assert.ok(viaDiag.length >= open.length * 2 - 1, `our connections, both ends (${viaDiag.length})`);
    assert.deepEqual(viaDiag, pick(b));
    assert.ok(viaDiag.some(([, s]) => s.remote.startsWith("127.0.0.1:") && s.state === "ESTABLISHED"));
    if (servers.length > 1) assert.ok(viaDiag.some(([, s]) => s.local.startsWith("[::1]:")), "v6 addresses in RFC 5952 form");
    for (const s of [a, b]) {
      assert.ok((s.tcpByState["LISTEN"] ?? 0) >= servers.length);
      assert.ok((s.tcpByState["TIME_WAIT"] ?? 0) >= SHORT * 0.9, `TIME_WAIT ${s.tcpByState["TIME_WAIT"]}`);
    }
    assert.equal(a.tcpSockets.size > 0 && [...a.tcpSockets.values()].every((s) => s.state !== "TIME_WAIT"), true);
    assert.ok([...a.tcpSockets.values()].some((s) => s.state === "LISTEN"), "listening sockets are kept (their owners are looked for)");
  });

  it("a namespace other than the agent's is read from /proc", () => {
    // With another /proc root the sampler cannot know the namespace is its own.
    const s = new NetSampler({ procRoot: "/proc/self/root/proc" });
    assert.ok(s.sample(process.pid, 1) !== undefined);
    assert.equal(s.tcpSource, "proc");
  });

  it("reads tw from sockstat", () => {
    assert.equal(sockstatTimeWait("sockets: used 41\nTCP: inuse 2 orphan 0 tw 18 alloc 2 mem 86\nUDP: inuse 0 mem 0\n"), 18);
    assert.equal(sockstatTimeWait("sockets: used 41\n"), undefined);
  });
});
