/**
 * `shadowlayer up`: the embedded default. Aggregator and agent in one process on this host, the
 * store and certificates under the data dir, and a live view of containers as they change.
 */
import { mkdir } from "node:fs/promises";
import type { LayerGraph } from "../proto/gen/shadowlayer/v1/graph_pb.js";
import { initCerts, loadTls } from "../common/certs.js";
import type { Logger } from "../common/log.js";
import { startAgent, defaultNodeName } from "../agent/agent.js";
import { startAggregator } from "../aggregator/server.js";
import { summarize } from "../aggregator/api/query-service.js";
import { dataPaths, removeEndpoint, writeEndpoint } from "./endpoint.js";
import { renderTree } from "./ldg-format.js";
import type { ExecSourceChoice } from "../agent/telemetry/telemetry.js";
import type { FeedConfig } from "../aggregator/feeds/manager.js";
import type { Policy } from "../proto/gen/shadowlayer/v1/vulns_pb.js";

export interface UpOptions {
  dataDir: string;
  listen: string;
  http: string;
  agentHttp: string;
  node?: string;
  insecure: boolean;
  dockerSocket?: string;
  procRoot?: string;
  dockerRoot?: string;
  refreshMs: number;
  sampleMs?: number;
  windowMs?: number;
  execSource?: ExecSourceChoice;
  bpftrace?: string;
  spoolMax?: number;
  feeds?: FeedConfig[];
  policies?: Policy[];
  json: boolean;
  quiet: boolean;
  log: Logger;
}

function stamp(): string {
  return new Date().toISOString().slice(11, 19);
}

export async function runUp(o: UpOptions, out: (line: string) => void): Promise<() => Promise<void>> {
  const paths = dataPaths(o.dataDir);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const node = o.node ?? defaultNodeName();
  if (!o.insecure) {
    const made = await initCerts(paths.tls, { nodes: [node] });
    if (made.created.length > 0) out(`certificates made in ${paths.tls}: ${made.created.join(", ")}`);
  }
  const aggregator = await startAggregator({
    dataDir: paths.dir,
    listen: o.listen,
    http: o.http,
    tls: o.insecure ? "insecure" : await loadTls(paths.tls, { role: "aggregator" }),
    log: o.log,
    ...(o.feeds !== undefined ? { feeds: o.feeds } : {}),
    ...(o.policies !== undefined ? { policies: o.policies } : {}),
  });
  const host = o.listen.replace(/:\d+$/, "").replace(/^0\.0\.0\.0$/, "127.0.0.1");
  const address = `${host}:${aggregator.port}`;

  const seen = new Set<string>();
  const onUpsert = (g: LayerGraph) => {
    if (o.quiet) return;
    if (o.json) {
      out(JSON.stringify({ event: "upsert", container_id: g.containerId, name: g.containerName, state: g.state, layers: g.layers.length }));
      return;
    }
    const s = summarize(g);
    const first = !seen.has(g.containerId);
    seen.add(g.containerId);
    out(`${stamp()} ${first ? "+" : "~"} ${s.containerName || s.containerId.slice(0, 12)} ${s.state} ${s.image}: ${s.layerCount} layers, ${s.processCount} processes${s.drift ? ", DRIFT" : ""}`);
    if (first) out(renderTree(g));
  };
  const onDelete = (id: string) => {
    if (o.quiet) return;
    seen.delete(id);
    out(o.json ? JSON.stringify({ event: "delete", container_id: id }) : `${stamp()} - ${id.slice(0, 12)} removed`);
  };
  aggregator.store.on("upsert", onUpsert);
  aggregator.telemetry.on("detection", (d) => {
    if (o.quiet) return;
    out(
      o.json
        ? JSON.stringify({ event: "detection", rule: d.rule, reason: d.reason, container_id: d.containerId, layer_id: d.layerId, path: d.path, pid: d.pid, source: d.source })
        : `${stamp()} ! DRIFT ${d.containerName || d.containerId.slice(0, 12)}: ${d.path} (pid ${d.pid}, ${d.reason}, layer ${d.layerId.slice(0, 19)}, via ${d.source})`,
    );
  });
  aggregator.store.on("delete", onDelete);

  let agent;
  try {
    agent = await startAgent({
      node,
      aggregator: address,
      tls: o.insecure ? "insecure" : await loadTls(paths.tls, { role: "agent", node }),
      http: o.agentHttp,
      refreshMs: o.refreshMs,
      log: o.log,
      dataDir: paths.dir,
      ...(o.sampleMs !== undefined ? { sampleMs: o.sampleMs } : {}),
      ...(o.windowMs !== undefined ? { windowMs: o.windowMs } : {}),
      ...(o.execSource !== undefined ? { execSource: o.execSource } : {}),
      ...(o.bpftrace !== undefined ? { bpftrace: o.bpftrace } : {}),
      ...(o.spoolMax !== undefined ? { spoolMax: o.spoolMax } : {}),
      ...(o.dockerSocket !== undefined ? { dockerSocket: o.dockerSocket } : {}),
      ...(o.procRoot !== undefined ? { procRoot: o.procRoot } : {}),
      ...(o.dockerRoot !== undefined ? { dockerRoot: o.dockerRoot } : {}),
    });
  } catch (err) {
    await aggregator.stop();
    throw err;
  }
  await writeEndpoint(o.dataDir, { address, insecure: o.insecure, pid: process.pid, node, startedAt: new Date().toISOString() });
  out(
    `shadowlayer up: aggregator ${address} (${o.insecure ? "INSECURE" : "mTLS"}), metrics http://${o.http.replace(/:\d+$/, "")}:${aggregator.httpPort}/metrics, ` +
      `agent node ${node}, engine ${agent.engine.version}, exec events via ${agent.telemetry.activeExecSource}; data in ${paths.dir}. ` +
      "Try `shadowlayer demo`, `shadowlayer graph <container>` and `shadowlayer top`. Ctrl-C stops.",
  );
  return async () => {
    await agent.stop();
    await aggregator.stop();
    await removeEndpoint(o.dataDir);
  };
}
