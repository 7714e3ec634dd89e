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
import type { SpoolBody } from "./link/spool.js";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { AgentMetrics } from "./metrics.js";
import { connectEngine, engineSocket, type EngineInfo } from "./runtime/engine.js";
import { EngineWatcher } from "./runtime/engine-watcher.js";
import { join } from "node:path";
import { Spool } from "./link/spool.js";
import { CgroupSampler } from "./telemetry/cgroup-sampler.js";
import { ProcessTable } from "./telemetry/process-table.js";
import { Telemetry, type ExecSourceChoice } from "./telemetry/telemetry.js";
import type { NodeContext } from "../proto/gen/shadowlayer/v1/telemetry_pb.js";

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
  /** Where the agent keeps its telemetry spool (a level DB under <dataDir>/agent-<node>/spool). */
  dataDir?: string;
  /** Telemetry: sampling tick and window length (ms); exec-event source. */
  sampleMs?: number;
  windowMs?: number;
  execSource?: ExecSourceChoice;
  bpftrace?: string;
  /** Spool bound (items). */
  spoolMax?: number;
  /** Heartbeat period (ms), default 10 s. */
  heartbeatMs?: number;
  /** Cgroup filesystem of the host (a DaemonSet mounts it at /host/sys/fs/cgroup). */
  cgroupRoot?: string;
  log: Logger;
}

export interface RunningAgent {
  node: string;
  engine: EngineInfo;
  collector: LdgCollector;
  telemetry: Telemetry;
  spool: Spool | undefined;
  link: AggregatorLink | undefined;
  metrics: AgentMetrics;
  httpPort: number | undefined;
  stop(): Promise<void>;
}

export function defaultNodeName(): string {
  return process.env["SHADOWLAYER_NODE"] || hostname();
}

/** Node context for the heartbeat (systeminformation; each part optional). */
async function nodeContext(): Promise<Omit<NodeContext, "$typeName">> {
  const [load, mem, fs] = await Promise.all([si.currentLoad().catch(() => undefined), si.mem().catch(() => undefined), si.fsSize().catch(() => undefined)]);
  const root = fs?.find((f) => f.mount === "/") ?? fs?.[0];
  return {
    loadPercent: load?.currentLoad ?? 0,
    load1: load?.avgLoad ?? 0,
    memoryTotalBytes: BigInt(mem?.total ?? 0),
    memoryAvailableBytes: BigInt(mem?.available ?? 0),
    diskTotalBytes: BigInt(Math.round(root?.size ?? 0)),
    diskUsedBytes: BigInt(Math.round(root?.used ?? 0)),
  };
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
  const procRoot = o.procRoot ?? "/proc";
  const processes = new ProcessTable(procRoot, new CgroupSampler({ procRoot, ...(o.cgroupRoot !== undefined ? { cgroupRoot: o.cgroupRoot } : {}) }));
  const collector = new LdgCollector({
    docker,
    node,
    procRoot,
    dockerRoot: o.dockerRoot ?? (info.rootDir || "/var/lib/docker"),
    log,
    metrics,
    processes,
  });
  const telemetry = new Telemetry({
    node,
    procRoot,
    collector,
    processes,
    log,
    metrics,
    ...(o.sampleMs !== undefined ? { sampleMs: o.sampleMs } : {}),
    ...(o.windowMs !== undefined ? { windowMs: o.windowMs } : {}),
    ...(o.execSource !== undefined ? { execSource: o.execSource } : {}),
    ...(o.bpftrace !== undefined ? { bpftrace: o.bpftrace } : {}),
  });
  const spool = o.dataDir === undefined ? undefined : await Spool.open(join(o.dataDir, `agent-${node}`, "spool"), o.spoolMax === undefined ? {} : { maxItems: o.spoolMax });
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
    link = new AggregatorLink({
      address: o.aggregator,
      tls: o.tls ?? "insecure",
      hello,
      snapshot: () => collector.current(),
      log,
      metrics,
      ...(spool !== undefined ? { spool } : {}),
      heartbeat: async () => ({
        at: timestampNow(),
        telemetry: { ...telemetry.status(), spoolPending: BigInt(spool?.pending ?? 0), spoolDropped: BigInt(spool?.dropped ?? 0) },
        node: await nodeContext(),
      }),
      ...(o.heartbeatMs !== undefined ? { heartbeatMs: o.heartbeatMs } : {}),
    });
  }
  const toSpool = (body: SpoolBody) => {
    if (spool === undefined) return;
    const before = spool.dropped;
    spool.append(body).then(
      () => {
        if (spool.dropped > before) metrics.spoolDropped.inc(spool.dropped - before);
        metrics.spoolPending.set(spool.pending);
        link?.telemetryAppended();
      },
      (err: unknown) => log.warn({ err: String(err) }, "cannot spool telemetry"),
    );
  };
  telemetry.on("window", (w) => toSpool({ case: "window", value: w }));
  telemetry.on("detection", (d) => toSpool({ case: "detection", value: d }));
  collector.on("upsert", (g) => link?.upsert(g));
  collector.on("delete", (id) => link?.delete(id));

  const watcher = new EngineWatcher({ docker, collector, log, metrics, refreshMs: o.refreshMs ?? 2000 });
  await watcher.start();
  await telemetry.start();
  link?.start();
  let http: HttpEndpoint | undefined;
  if (o.http !== undefined) {
    http = await startHttpEndpoint(o.http, [metrics.registry], () => ({
      ok: true,
      detail: `${link === undefined ? "no aggregator configured" : link.connected ? "aggregator connected" : "aggregator unreachable (working on)"}; exec events: ${telemetry.activeExecSource}`,
    }));
  }
  log.info(
    { engine: info.version, driver: info.driver, containers: collector.current().length, aggregator: o.aggregator, execSource: telemetry.activeExecSource, windowSeconds: telemetry.windowSeconds },
    "agent started",
  );
  return {
    node,
    engine: info,
    collector,
    telemetry,
    spool,
    link,
    metrics,
    httpPort: http?.port,
    async stop() {
      watcher.stop();
      await telemetry.stop();
      link?.stop();
      await http?.close();
      await spool?.close();
    },
  };
}
