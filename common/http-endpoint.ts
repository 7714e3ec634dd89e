/**
 * The small HTTP side of each program: Prometheus /metrics, /healthz (the process lives) and
 * /readyz (it can do its job). Bound to loopback unless told otherwise.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Registry } from "prom-client";
import { splitHostPort } from "./listen-address.js";

export interface HttpEndpoint {
  port: number;
  close(): Promise<void>;
}

export async function startHttpEndpoint(
  address: string,
  registries: Registry[],
  ready: () => { ok: boolean; detail: string },
): Promise<HttpEndpoint> {
  const merged = Registry.merge(registries);
  const server: Server = createServer((req, res) => {
    const url = req.url ?? "/";
    if (url === "/metrics") {
      merged.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": merged.contentType });
          res.end(text);
        },
        (err: unknown) => {
          res.writeHead(500);
          res.end(String(err));
        },
      );
    } else if (url === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok\n");
    } else if (url === "/readyz") {
      const r = ready();
      res.writeHead(r.ok ? 200 : 503, { "content-type": "text/plain" });
      res.end(`${r.detail}\n`);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const { host, port } = splitHostPort(address);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
