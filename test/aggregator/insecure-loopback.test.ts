/**
 * An aggregator without TLS (--insecure) listens on loopback only, gRPC and HTTP alike: refused
 * at startAggregator (what tests and every command reach) before the store is opened.
 */
import assert from "node:assert/strict";
import { access } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { tempDir } from "../harness/temp-dir.js";
import { startAggregator } from "../../aggregator/index.js";
import { Code, ShadowError } from "../../common/errors.js";
import { isLoopbackHost } from "../../common/listen-address.js";
import { silentLogger } from "../../common/log.js";

describe("--insecure listens on loopback only", () => {
  const tmp = tempDir("sl-insecure-");

  it("refuses a non-loopback gRPC or HTTP address before opening anything", async () => {
    const cases: Array<{ listen: string; http?: string; refused: string }> = [
      { listen: "0.0.0.0:0", refused: "listen 0.0.0.0:0" },
      { listen: "[::]:0", refused: "listen [::]:0" },
      { listen: "127.example.org:0", refused: "listen 127.example.org:0" },
      { listen: "127.0.0.1:0", http: "0.0.0.0:0", refused: "http 0.0.0.0:0" },
    ];
    for (const [i, c] of cases.entries()) {
      const dataDir = join(tmp.path, `refused-${i}`);
      await assert.rejects(
        startAggregator({ dataDir, listen: c.listen, ...(c.http !== undefined ? { http: c.http } : {}), tls: "insecure", log: silentLogger() }),
        (err: unknown) => err instanceof ShadowError && err.code === Code.InvalidArgument && err.message === `${c.refused}: --insecure listens on loopback only (127.0.0.0/8, ::1 or localhost)`,
      );
      await assert.rejects(access(dataDir), "nothing was made");
    }
  });

  it("serves on 127.0.0.0/8 and localhost, HTTP included", async () => {
    for (const [listen, http] of [
      ["127.0.0.1:0", "127.0.0.1:0"],
      ["localhost:0", "0"],
      ["127.0.0.2:0", ":0"],
    ] as const) {
      const agg = await startAggregator({ dataDir: join(tmp.path, "ok"), listen, http, tls: "insecure", log: silentLogger() });
      assert.ok(agg.port > 0 && (agg.httpPort ?? 0) > 0, listen);
      await agg.stop();
    }
  });

  it("reads loopback as a parsed address, not as text", () => {
    for (const h of ["127.0.0.1", "127.255.255.254", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost", "LOCALHOST"]) assert.ok(isLoopbackHost(h), h);
    for (const h of ["0.0.0.0", "::", "[::]", "128.0.0.1", "127.example.org", "localhost.example.org", "10.0.0.1", "::2", ""]) assert.ok(!isLoopbackHost(h), h);
  });
});
