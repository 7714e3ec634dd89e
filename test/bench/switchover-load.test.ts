/**
 * The switchover benchmark's measuring tools, against a real HTTP server on loopback: a server
 * replaced by a new start after a gap is seen as a first new token no earlier than the new start,
 * refused requests are counted as failed, and the gap is as long as the server was away.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { longestGap, TokenLoad, type Sample } from "./switchover-load.js";

function serve(token: string, port = 0): Promise<Server> {
  const s = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain", connection: "close" });
    res.end(`${token}\n`);
  });
  return new Promise((resolve, reject) => {
    s.once("error", reject);
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

const close = (s: Server) => new Promise<void>((r) => s.close(() => r()));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("switchover load", () => {
  it("finds the first reply of a new start, counts refused requests, and measures the gap", async () => {
    const first = await serve("start-a");
    const port = (first.address() as AddressInfo).port;
    const load = new TokenLoad(port, { clients: 2, paceMs: 5, timeoutMs: 1_000, maxRequests: 5_000, maxSeconds: 10 });
    let second: Server | undefined;
    try {
      const warm = await load.firstNew(0, new Set(), 5_000);
      assert.equal(warm?.token, "start-a");
      await sleep(50);
      const old = load.tokens();
      const t0 = performance.now();
      first.closeAllConnections();
      await close(first);
      const away = 300;
      await sleep(away);
      const restarted = performance.now();
      second = await serve("start-b", port);
      const fresh = await load.firstNew(t0, old, 5_000);
      assert.equal(fresh?.token, "start-b");
      assert.ok(fresh.end >= restarted, "the first new token came after the new start");
      await sleep(50);
      const samples = await load.stop();
      assert.ok(samples.some((s) => !s.ok), "requests while nothing listened failed");
      const gap = longestGap(samples, warm.end, performance.now());
      assert.ok(gap >= away - 20 && gap < away + 1_000, `gap ${gap} ms for ${away} ms away`);
      assert.ok(samples.every((s) => !s.ok || s.token === "start-a" || s.token === "start-b"));
    } finally {
      await load.stop();
      if (second !== undefined) await close(second);
      if (first.listening) await close(first);
    }
  });

  it("longestGap takes successes only, between the bounds", () => {
    const s = (end: number, ok = true): Sample => ({ start: end - 1, end, ok, token: ok ? "t" : undefined });
    const samples = [s(10), s(20), s(30, false), s(120), s(125), s(400)];
    assert.equal(longestGap(samples, 0, 200), 100);
    assert.equal(longestGap(samples, 0, 500), 275);
    assert.equal(longestGap([], 0, 100), 0);
  });
});
