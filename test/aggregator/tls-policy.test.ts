/**
 * The aggregator speaks TLS 1.3, or 1.2 with an ECDHE AEAD suite, and nothing older or weaker:
 * node:tls clients holding a valid agent certificate try each against a real aggregator.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, type ConnectionOptions } from "node:tls";
import { startAggregator, type RunningAggregator } from "../../aggregator/index.js";
import { AGGREGATOR_TLS_NAME, initCerts, loadTls, type TlsMaterial } from "../../common/certs.js";
import { silentLogger } from "../../common/log.js";

type Outcome = { ok: true; protocol: string; cipher: string } | { ok: false; error: string };

describe("TLS versions and suites", () => {
  let dir: string;
  let agg: RunningAggregator;
  let agent: TlsMaterial;

  /** One TLS handshake with `options` on top of the agent's certificate, and how it ended. */
  const handshake = (options: ConnectionOptions): Promise<Outcome> =>
    new Promise((resolve) => {
      const s = connect({ host: "127.0.0.1", port: agg.port, ca: agent.ca, key: agent.key, cert: agent.cert, servername: AGGREGATOR_TLS_NAME, ALPNProtocols: ["h2"], ...options });
      s.setTimeout(5000, () => s.destroy(new Error("timeout")));
      s.once("secureConnect", () => {
        resolve({ ok: true, protocol: s.getProtocol() ?? "", cipher: s.getCipher().name });
        s.destroy();
      });
      s.once("error", (err) => resolve({ ok: false, error: err.message }));
    });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-tls-"));
    await initCerts(join(dir, "tls"), { nodes: ["node-a"] });
    agent = await loadTls(join(dir, "tls"), { role: "agent", node: "node-a" });
    agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(join(dir, "tls"), { role: "aggregator" }), log: silentLogger() });
  });
  after(async () => {
    await agg.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("accepts TLS 1.3", async () => {
    const r = await handshake({ minVersion: "TLSv1.3" });
    assert.deepEqual(r.ok && r.protocol, "TLSv1.3");
  });

  it("accepts TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305", async () => {
    for (const cipher of ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"]) {
      const r = await handshake({ maxVersion: "TLSv1.2", ciphers: cipher });
      assert.deepEqual(r.ok ? [r.protocol, r.cipher] : r, ["TLSv1.2", cipher]);
    }
  });

  it("refuses TLS 1.2 offering only CBC suites", async () => {
    for (const cipher of ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA"]) {
      const r = await handshake({ maxVersion: "TLSv1.2", ciphers: cipher });
      assert.equal(r.ok, false, `${cipher} was accepted`);
      assert.match(r.ok ? "" : r.error, /handshake failure/i, "the server found no suite to share");
    }
  });

  it("refuses TLS 1.1", async () => {
    // SECLEVEL=0: this client's own OpenSSL would not offer TLS 1.1 otherwise.
    const r = await handshake({ minVersion: "TLSv1.1", maxVersion: "TLSv1.1", ciphers: "DEFAULT:@SECLEVEL=0" });
    assert.equal(r.ok, false);
    assert.match(r.ok ? "" : r.error, /protocol version|unsupported protocol/i);
  });
});
