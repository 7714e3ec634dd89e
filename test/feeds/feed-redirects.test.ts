/**
 * Feed URLs keep the https-or-loopback-http rule across redirects, against real loopback HTTP
 * servers: each redirect is checked before anything dials it, loopback to loopback is followed,
 * and a redirect loop ends after a bounded number of requests.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { text } from "node:stream/consumers";
import { after, before, describe, it } from "node:test";
import { checkRedirect } from "../../aggregator/feeds/feed-config.js";
import { MAX_REDIRECTS, openFeedSource, type LastRead } from "../../aggregator/feeds/feed-source.js";
import { Code, ShadowError } from "../../common/errors.js";

const NEVER_READ: LastRead = { gen: 0, etag: "", lastModified: "", fileStamp: "" };

/** A loopback server answering with `handle`, recording each path it was asked for. */
async function serve(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; base: string; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? "");
    handle(req, res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
}

const redirect = (res: ServerResponse, to: string, status = 302) => {
  res.writeHead(status, { location: to });
  res.end();
};

const refused = (pattern: RegExp) => (err: unknown) => err instanceof ShadowError && err.code === Code.FailedPrecondition && pattern.test(err.message);

describe("feed redirects", () => {
  let origin: Awaited<ReturnType<typeof serve>>;
  let target: Awaited<ReturnType<typeof serve>>;

  before(async () => {
    target = await serve((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"vulnerabilities":[]}');
    });
    const targetPort = new URL(target.base).port;
    origin = await serve((req, res) => {
      const url = req.url ?? "";
      // 0.0.0.0 is not loopback by the rule, yet a dial to it lands on this host's 127.0.0.1: the
      // target server would see the request if the redirect were followed without its check.
      if (url === "/to-any") redirect(res, `http://0.0.0.0:${targetPort}/kev.json`);
      else if (url === "/to-remote") redirect(res, "http://192.0.2.1/kev.json");
      else if (url === "/to-127-name") redirect(res, "http://127.example.org/kev.json");
      else if (url === "/to-loopback") redirect(res, `${target.base}/kev.json`, 301);
      else if (url === "/relative") redirect(res, "/to-loopback", 307);
      else if (url === "/loop") redirect(res, "/loop");
      else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  after(async () => {
    for (const s of [origin, target]) await new Promise((r) => s.server.close(r));
  });

  it("refuses a redirect to plain http off loopback before dialing it", async () => {
    await assert.rejects(openFeedSource(`${origin.base}/to-any`, NEVER_READ, false), refused(/redirected to http:\/\/0\.0\.0\.0:\d+\/kev\.json: only https:\/\/ URLs/));
    assert.deepEqual(target.hits, [], "the target was never asked");
    const started = Date.now();
    // 192.0.2.1 (TEST-NET-1) would time out, not answer: a quick refusal naming the rule was never dialed.
    await assert.rejects(openFeedSource(`${origin.base}/to-remote`, NEVER_READ, false), refused(/redirected to http:\/\/192\.0\.2\.1\/kev\.json: only https/));
    assert.ok(Date.now() - started < 2000);
    await assert.rejects(openFeedSource(`${origin.base}/to-127-name`, NEVER_READ, false), refused(/redirected to http:\/\/127\.example\.org\/kev\.json: only https/));
  });

  it("follows loopback to loopback, absolute or relative", async () => {
    target.hits.length = 0;
    for (const path of ["/to-loopback", "/relative"]) {
      const opened = await openFeedSource(`${origin.base}${path}`, NEVER_READ, false);
      assert.notEqual(opened, "unchanged");
      if (opened === "unchanged") return;
      assert.equal(await text(opened.stream), '{"vulnerabilities":[]}');
      assert.equal(opened.hint, "json");
    }
    assert.deepEqual(target.hits, ["/kev.json", "/kev.json"]);
  });

  it("ends a redirect loop after a bounded number of requests", async () => {
    origin.hits.length = 0;
    await assert.rejects(openFeedSource(`${origin.base}/loop`, NEVER_READ, false), refused(new RegExp(`more than ${MAX_REDIRECTS} redirects`)));
    assert.equal(origin.hits.length, MAX_REDIRECTS + 1);
  });

  it("lets only a loopback URL redirect to plain http on loopback", () => {
    assert.doesNotThrow(() => checkRedirect("http://127.0.0.1:1/a", "http://127.0.0.1:1/a", "http://[::1]:2/b"));
    assert.doesNotThrow(() => checkRedirect("https://example.org/a", "https://example.org/a", "https://mirror.example.org/b"));
    assert.throws(() => checkRedirect("https://example.org/a", "https://example.org/a", "http://127.0.0.1:9/admin"), refused(/plain http to loopback only from loopback/));
    assert.throws(() => checkRedirect("https://example.org/a", "https://example.org/a", "ftp://example.org/b"), refused(/only https/));
  });
});
