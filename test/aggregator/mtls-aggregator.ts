/**
 * A real aggregator over mTLS on a loopback port, in a temp dir, with the certificates initCerts
 * makes: what the tests of who may call what start from.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import type { DescService } from "@bufbuild/protobuf";
import { initCerts, loadTls, type TlsMaterial } from "../../common/certs.js";
import { channelCredentials, makeClient } from "../../common/grpc.js";
import { silentLogger, type Logger } from "../../common/log.js";
import { startAggregator, type FeedConfig, type RunningAggregator } from "../../aggregator/index.js";

export interface MtlsAggregator {
  dir: string;
  tlsDir: string;
  agg: RunningAggregator;
  address: string;
  /** A client of one service presenting `tls` (or other credentials); closed by stop(). */
  client(svc: DescService, tls: TlsMaterial | grpc.ChannelCredentials): grpc.Client;
  stop(): Promise<void>;
}

export async function startMtlsAggregator(opts: { nodes: string[]; log?: Logger; feeds?: FeedConfig[] }): Promise<MtlsAggregator> {
  const dir = await mkdtemp(join(tmpdir(), "sl-mtls-"));
  const tlsDir = join(dir, "tls");
  await initCerts(tlsDir, { nodes: opts.nodes });
  const agg = await startAggregator({ dataDir: join(dir, "agg"), listen: "127.0.0.1:0", tls: await loadTls(tlsDir, { role: "aggregator" }), log: opts.log ?? silentLogger(), ...(opts.feeds !== undefined ? { feeds: opts.feeds } : {}) });
  const address = `127.0.0.1:${agg.port}`;
  const clients: grpc.Client[] = [];
  return {
    dir,
    tlsDir,
    agg,
    address,
    client(svc, tls) {
      const c = makeClient(svc, address, "cert" in tls ? channelCredentials(tls) : tls);
      clients.push(c);
      return c;
    },
    async stop() {
      for (const c of clients) c.close();
      await agg.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
