/**
 * A token service as distribution's token auth specifies it, for the test registry in token mode:
 * GET /token?service=…&scope=repository:NAME:ACTIONS with Basic credentials answers a JWT (ES256,
 * the signing certificate in `x5c`) granting the asked actions; the registry trusts it through
 * `auth.token.rootcertbundle`. Wrong credentials get 401.
 */
import { createPrivateKey, randomBytes, sign, X509Certificate } from "node:crypto";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { RegistryAuth } from "../../common/registry-client.js";

export interface TokenServer {
  realm: string;
  /** Token requests answered so far (granted or refused). */
  requests(): number;
  close(): Promise<void>;
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString("base64url");

export async function startTokenServer(o: { tls: { cert: Buffer; key: Buffer }; signer: { cert: Buffer; key: Buffer }; auth: RegistryAuth; service: string; issuer: string }): Promise<TokenServer> {
  const signingKey = createPrivateKey(o.signer.key);
  const x5c = [new X509Certificate(o.signer.cert).raw.toString("base64")];
  const basic = `Basic ${Buffer.from(`${o.auth.username}:${o.auth.password}`).toString("base64")}`;
  let requests = 0;
  const server: Server = createServer(o.tls, (req, res) => {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    if (url.pathname !== "/token") {
      res.writeHead(404).end();
      return;
    }
    requests++;
    if (req.headers.authorization !== basic) {
      res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "invalid username or password" }] }));
      return;
    }
    const access = url.searchParams.getAll("scope").flatMap((s) => {
      const m = /^(repository):([^:]+):(.+)$/.exec(s);
      return m === null ? [] : [{ type: m[1], name: m[2], actions: (m[3] ?? "").split(",").map((a) => (a === "delete" ? "*" : a)) }];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ typ: "JWT", alg: "ES256", x5c }));
    const claims = b64url(JSON.stringify({ iss: o.issuer, sub: o.auth.username, aud: o.service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString("hex"), access }));
    const sig = sign("sha256", Buffer.from(`${header}.${claims}`), { key: signingKey, dsaEncoding: "ieee-p1363" });
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: `${header}.${claims}.${b64url(sig)}`, expires_in: 300 }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    realm: `https://127.0.0.1:${port}/token`,
    requests: () => requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
