/**
 * The node agent: follows the local engine, keeps each container's LDG current, and streams
 * graphs to the aggregator. Each part runs on without the others (no aggregator, no problem).
 */
import { hostname } from "node:os";
import { create } from "@bufbuild/protobuf";
import si from "systeminformation";
import { HelloSchema, HostInfoSchema, type Hello } from "../proto/gen/shadowlayer/v1/agent_pb.js";
import type { TlsMaterial } from "../common/certs.js";
import { startHttpEndpoint, type HttpEndpoint } from "../common/http-endpoint.js";
import type { Logger } from "../common/log.js";
import { VERSION } from "../common/version.js";
import { LdgCollector } from "./layers/ldg-collector.js";
import { AggregatorLink } from "./link/aggregator-link.js";
import { AgentMetrics } from "./metrics.js";
import { connectEngine, engineSocket, type EngineInfo } from "./runtime/engine.js";
import { EngineWatcher } from "./runtime/engine-watcher.js";

export interface AgentOptions {
  node?: string;
  dockerSocket?: string;
  /** /proc of the host (a DaemonSet mounts it at /host/proc). */
  procRoot?: string;
  /** The engine's data root as mounted in the agent; defaults to what the engine reports. */
  dockerRoot?: string;
  /** host:port of the aggregator; no link when absent. */
  aggregator?: string;
  tls?: TlsMaterial | "insecure";
  /** host:port for /metrics, /healthz, /readyz; none when absent. */
  http?: string;
  refreshMs?: number;
  log: Logger;
}

export interface RunningAgent {
  node: string;
  engine: EngineInfo;
  collector: LdgCollector;
  link: AggregatorLink | undefined;
  metrics: AgentMetrics;
  httpPort: number | undefined;
  stop(): Promise<void>;
}

export function defaultNodeName(): string {
  return process.env["SHADOWLAYER_NODE"] || hostname();
}

async function hostInfo(): Promise<{ os: string; kernel: string; cpus: number; memory: bigint }> {
  try {
    const [os, mem, cpu] = await Promise.all([si.osInfo(), si.mem(), si.cpu()]);
    return { os: `${os.distro} ${os.release}`.trim(), kernel: os.kernel, cpus: cpu.cores, memory: BigInt(mem.total) };
  } catch {
    return { os: "", kernel: "", cpus: 0, memory: 0n };
  }
}

export async function startAgent(o: AgentOptions): Promise<RunningAgent> {
  const node = o.node ?? defaultNodeName();
  const log = o.log.child({ node });
  const metrics = new AgentMetrics();
  const { docker, info } = await connectEngine(engineSocket(o.dockerSocket));
  if (info.driver !== "overlay2") {
    log.warn({ driver: info.driver }, "storage driver is not overlay2: layer directories and mount checks are unavailable");
  }
  const collector = new LdgCollector({
    docker,
    node,
    procRoot: o.procRoot ?? "/proc",
    dockerRoot: o.dockerRoot ?? (info.rootDir || "/var/lib/docker"),
    log,
    metrics,
  });
  const host = await hostInfo();
  const hello = (): Hello =>
    create(HelloSchema, {
      node,
      agentVersion: VERSION,
      engineVersion: info.version,
      storageDriver: info.driver,
      host: create(HostInfoSchema, { hostname: hostname(), os: host.os, kernel: host.kernel, cpus: host.cpus, memoryBytes: host.memory }),
    });
  let link: AggregatorLink | undefined;
  if (o.aggregator !== undefined) {
    link = new AggregatorLink({ address: o.aggregator, tls: o.tls ?? "insecure", hello, snapshot: () => collector.current(), log, metrics });
  }
  collector.on("upsert", (g) => link?.upsert(g));
  collector.on("delete", (id) => link?.delete(id));

  const watcher = new EngineWatcher({ docker, collector, log, metrics, refreshMs: o.refreshMs ?? 2000 });
  await watcher.start();
  link?.start();
  let http: HttpEndpoint | undefined;
  if (o.http !== undefined) {
    http = await startHttpEndpoint(o.http, [metrics.registry], () => ({
      ok: true,
      detail: link === undefined ? "no aggregator configured" : link.connected ? "aggregator connected" : "aggregator unreachable (working on)",
    }));
  }
  log.info({ engine: info.version, driver: info.driver, containers: collector.current().length, aggregator: o.aggregator }, "agent started");
  return {
    node,
    engine: info,
    collector,
    link,
    metrics,
    httpPort: http?.port,
    async stop() {
      watcher.stop();
      link?.stop();
      await http?.close();
    },
  };
}
