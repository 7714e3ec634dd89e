/**
 * Proof that a refusal came from the TLS layer and not from a server that is down: UNAVAILABLE
 * alone is what a dead server answers too.
 */
import assert from "node:assert/strict";
import { connect as tlsConnect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { AGGREGATOR_TLS_NAME, type TlsMaterial } from "../../common/certs.js";

/**
 * Makes the call that should be refused and one that should be served at the same moment, on the
 * same server; asserts the second was served and the first refused UNAVAILABLE; returns its error.
 */
export async function refusedWhileServed(refused: () => Promise<unknown>, served: () => Promise<unknown>): Promise<grpc.ServiceError> {
  const [bad, good] = await Promise.allSettled([refused(), served()]);
  assert.equal(good.status, "fulfilled", "the same server serves a good certificate meanwhile");
  assert.equal(bad.status, "rejected");
  const err = (bad as PromiseRejectedResult).reason as grpc.ServiceError;
  assert.equal(err.code, grpc.status.UNAVAILABLE);
  return err;
}

/**
 * Opens TLS (ALPN h2) to the aggregator with `cert`, sends the HTTP/2 preface and an empty
 * SETTINGS frame, and tells whether the server answered with any HTTP/2 bytes.
 */
export function tlsProbe(port: number, ca: Buffer, cert: TlsMaterial): Promise<{ served: boolean }> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: "127.0.0.1", port, ca, key: cert.key, cert: cert.cert, servername: AGGREGATOR_TLS_NAME, ALPNProtocols: ["h2"] });
    s.setTimeout(3000, () => s.destroy());
    s.once("data", () => {
      resolve({ served: true });
      s.destroy();
    });
    s.on("error", () => undefined);
    s.on("close", () => resolve({ served: false }));
    s.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
  });
}
