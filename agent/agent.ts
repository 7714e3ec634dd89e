/**
 * The node agent: follows the local engine, keeps each container's LDG current, and streams
 * graphs to the aggregator. Each part runs on without the others (no aggregator, no problem).
 */
import { hostname, loadavg } from "node:os";
import { readProcFile } from "./collectors/proc-files.js";
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
import { connectEngine, engineSocket, type EngineInfo } from "../common/engine.js";
import { EngineWatcher } from "./runtime/engine-watcher.js";
import { join } from "node:path";
import { Spool } from "./link/spool.js";
import { InventoryScanner } from "./inventory/scanner.js";
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
  /** Read each image's package inventory (default true). */
  inventory?: boolean;
  /** Cgroup filesystem of the host (a DaemonSet mounts it at /host/sys/fs/cgroup). */
  cgroupRoot?: string;
  log: Logger;
}

export interface RunningAgent {
  node: string;
  engine: EngineInfo;
  collector: LdgCollector;
  telemetry: Telemetry;
  inventory: InventoryScanner | undefined;
  spool: Spool | undefined;
  link: AggregatorLink | undefined;
  metrics: AgentMetrics;
  httpPort: number | undefined;
  stop(): Promise<void>;
}

/** The hostname: --node and SHADOWLAYER_NODE are read by the agent's configuration (config.ts). */
export function defaultNodeName(): string {
  return hostname();
}

/** Disk figures change slowly and cost a `df` run: refreshed at most once a minute. */
let diskCache: { at: number; fs: Awaited<ReturnType<typeof si.fsSize>> | undefined } | undefined;
async function diskSizes(): Promise<Awaited<ReturnType<typeof si.fsSize>> | undefined> {
  if (diskCache === undefined || Date.now() - diskCache.at > 60_000) diskCache = { at: Date.now(), fs: await si.fsSize().catch(() => undefined) };
  return diskCache.fs;
}

/**
 * CPU busy share of the node since the previous call, from /proc/stat (systeminformation's
 * currentLoad spawns a shell for the same figure on every call).
 */
let lastCpu: { busy: number; total: number } | undefined;
function cpuLoadPercent(procRoot: string): number {
  const line = readProcFile(`${procRoot}/stat`)?.split("\n", 1)[0] ?? "";
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  if (f.length < 4 || f.some((x) => !Number.isFinite(x))) return 0;
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  const busy = total - idle;
  const prev = lastCpu;
  lastCpu = { busy, total };
  if (prev === undefined || total <= prev.total) return 0;
  return ((busy - prev.busy) / (total - prev.total)) * 100;
}

/** Node context for the heartbeat (memory and disks through systeminformation). */
async function nodeContext(procRoot: string): Promise<Omit<NodeContext, "$typeName">> {
  const [mem, fs] = await Promise.all([si.mem().catch(() => undefined), diskSizes()]);
  const root = fs?.find((f) => f.mount === "/") ?? fs?.[0];
  return {
    loadPercent: cpuLoadPercent(procRoot),
    load1: loadavg()[0] ?? 0,
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
  const { docker, events, info } = await connectEngine(engineSocket(o.dockerSocket));
  if (info.driver !== "overlay2") {
    log.warn({ driver: info.driver }, "storage driver is not overlay2: layer directories and mount checks are unavailable");
  }
  const procRoot = o.procRoot ?? "/proc";
  // A first /proc/stat reading, so the first heartbeat's load is a measured delta, not 0.
  cpuLoadPercent(procRoot);
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
  const scanner = o.inventory === false ? undefined : await InventoryScanner.open(o.dataDir === undefined ? undefined : join(o.dataDir, `agent-${node}`, "inventory"), log);
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
      ...(scanner !== undefined ? { inventories: () => scanner.all() } : {}),
      heartbeat: async () => ({
        at: timestampNow(),
        telemetry: { ...telemetry.status(), spoolPending: BigInt(spool?.pending ?? 0), spoolDropped: BigInt(spool?.dropped ?? 0) },
        node: await nodeContext(procRoot),
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
  telemetry.on("windows", (windows) => toSpool({ case: "windows", value: { windows } }));
  telemetry.on("detection", (d) => toSpool({ case: "detection", value: d }));
  collector.on("upsert", (g) => {
    link?.upsert(g);
    const image = collector.container(g.containerId)?.image;
    if (image !== undefined) scanner?.want(image);
  });
  scanner?.on("inventory", (inv) => link?.inventory(inv));
  collector.on("delete", (id) => link?.delete(id));

  const watcher = new EngineWatcher({ docker, events, collector, log, metrics, refreshMs: o.refreshMs ?? 2000 });
  try {
    // The exec-event source is chosen first: with --exec-source ebpf and no eBPF, nothing starts.
    await telemetry.start();
    await watcher.start();
  } catch (err) {
    watcher.stop();
    await telemetry.stop();
    await spool?.close();
    await scanner?.close();
    throw err;
  }
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
    inventory: scanner,
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
      await scanner?.close();
    },
  };
}
