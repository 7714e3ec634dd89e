/**
 * The node agent: follows the local engine, keeps each container's LDG current, and streams
 * graphs to the aggregator. Each part runs on without the others (no aggregator, no problem).
 * The parts start in the order of one list of services and stop in reverse.
 */
import { hostname } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { CommandSchema, HelloSchema, HostInfoSchema, RollbackSchema, SwitchoverSchema, type Command, type CommandResult, type Hello, type Rollback, type Switchover } from "../proto/gen/shadowlayer/v1/agent_pb.js";
import { SwitchoverKind, SwitchoverOutcome } from "../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { TlsMaterial } from "../common/certs.js";
import Docker from "dockerode";
import { engineSocket } from "../common/engine.js";
import { startHttpEndpoint, type HttpEndpoint } from "../common/http-endpoint.js";
import { refuseInsecureListen } from "../common/listen-address.js";
import type { Logger } from "../common/log.js";
import { VERSION } from "../common/version.js";
import { AgentCommands, readRegistryFiles, registrySignatures } from "./actions/agent-commands.js";
import type { CommandHandler } from "./actions/command-handler.js";
import { CommandJournal } from "./actions/command-journal.js";
import { CommandStatus } from "../proto/gen/shadowlayer/v1/agent_pb.js";
import type { StoredSignatureReader } from "./actions/prepare-shadow.js";
import { ServiceRoutes } from "./actions/switchover/service-routes.js";
import { SERVICE_LABELS } from "./actions/switchover/service-labels.js";
import { SwitchoverMachine, type SwitchoverBounds } from "./actions/switchover/switchover-machine.js";
import { SwitchoverRecords } from "./actions/switchover/switchover-records.js";
import { recoverInterrupted } from "./actions/switchover/switchover-recovery.js";
import { TcpProxy, type TcpProxyOptions } from "./actions/traffic/tcp-proxy.js";
import type { TrafficRedirect } from "./actions/traffic/traffic-redirect.js";
import type { InventoryBudget } from "./inventory/inventory-budget.js";
import { InventoryScanner } from "./inventory/scanner.js";
import { LdgCollector } from "./layers/ldg-collector.js";
import { AggregatorLink } from "./link/aggregator-link.js";
import { Spool, type SpoolBody } from "./link/spool.js";
import { windowBatches } from "./link/window-batches.js";
import { AgentMetrics } from "./metrics.js";
import { AnomalyScorer, type AnomalySettings } from "./scoring/anomaly-scorer.js";
import { EngineWatcher } from "./runtime/engine-watcher.js";
import { connectRuntime } from "./runtime/connect.js";
import type { RuntimeChoice, RuntimeInfo } from "./runtime/runtime.js";
import { NodeFacts } from "./runtime/node-facts.js";
import { partService, service, startServices, type Service } from "./service-runner.js";
import { AgentState } from "./state/agent-state.js";
import { CgroupSampler } from "./telemetry/cgroup-sampler.js";
import { ProcessTable } from "./telemetry/process-table.js";
import { Telemetry, type ExecSourceChoice } from "./telemetry/telemetry.js";

export interface AgentOptions {
  node?: string;
  /** The container runtime to read (default auto: containerd with CRI if it answers, else Docker). */
  runtime?: RuntimeChoice;
  dockerSocket?: string;
  /** containerd's socket, its namespace of pods (k8s.io) and its overlayfs snapshotter root as mounted here. */
  containerdSocket?: string;
  containerdNamespace?: string;
  containerdSnapshots?: string;
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
  /** Where the agent keeps its state: one level DB, <dataDir>/agent-<node>/state (spool, inventory cache, command journal). */
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
  /** What reading one image's inventory may cost (default DEFAULT_INVENTORY_BUDGET). */
  inventoryBudget?: Partial<InventoryBudget>;
  /** Cgroup filesystem of the host (a DaemonSet mounts it at /host/sys/fs/cgroup). */
  cgroupRoot?: string;
  /** What the agent does for commands from the aggregator (default: AgentCommands, shadows prepared here). */
  commandHandler?: CommandHandler;
  /** The aggregator's image-signing public key (PEM file); without one every shadow is refused. */
  signingKeyPub?: string;
  /** Registry credentials file (username:password) and CA file, for pulling shadows and reading their signatures. */
  registryAuth?: string;
  registryCa?: string;
  /** Reads a shadow's stored signature from its registry; without one, registry shadows are refused. */
  storedSignatures?: StoredSignatureReader;
  /** A shadow pull's bound (ms), default 10 minutes. */
  pullTimeoutMs?: number;
  /** Switchover defaults (a command's own bounds win): health gate, drain, observation window (ms). */
  switchBounds?: Partial<SwitchoverBounds>;
  /** How long a switchover step retries while the engine is unreachable (default 60 s). */
  switchEngineRetryMs?: number;
  /** The service proxy's bounds (hold, retries). */
  proxy?: Omit<TcpProxyOptions, "log">;
  /**
   * Which labelled containers' services this agent serves (by their labels). Default: all, one
   * agent per engine; a test or benchmark sharing an engine with others limits it to its own.
   */
  serviceFilter?: (labels: Record<string, string>) => boolean;
  /**
   * The anomaly model (agent/scoring/): on by default; models in `<data-dir>/agent-<node>/models/`
   * (in memory without a data dir).
   */
  anomaly?: AnomalySettings;
  log: Logger;
}

export interface RunningAgent {
  node: string;
  /** The runtime read: docker or containerd, its version, storage. */
  runtime: RuntimeInfo;
  collector: LdgCollector;
  telemetry: Telemetry;
  /** Scores each window batch between the telemetry and the spool. */
  anomaly: AnomalyScorer;
  inventory: InventoryScanner | undefined;
  spool: Spool | undefined;
  link: AggregatorLink | undefined;
  /** Commands received and their results (in level when `dataDir` is set, else in memory). */
  journal: CommandJournal;
  /** The agent's own command handler (shadow containers), whichever handler the journal uses. */
  commands: AgentCommands;
  /** The managed services' stable addresses (the agent's L4 proxy; down while the agent is). */
  proxy: TrafficRedirect;
  /** Every switchover and rollback on this node (in level when `dataDir` is set). */
  switchovers: SwitchoverRecords;
  /** A switchover through the journal, as if the aggregator had sent it (the benchmark, the demo). */
  switchover(action: Partial<Omit<Switchover, "$typeName">> & { containerId: string }, id?: string): Promise<CommandResult>;
  /** A rollback through the journal. */
  rollback(action: Partial<Omit<Rollback, "$typeName">> & { containerId: string }, id?: string): Promise<CommandResult>;
  metrics: AgentMetrics;
  httpPort: number | undefined;
  stop(): Promise<void>;
}

/** The hostname: --node and SHADOWLAYER_NODE are read by the agent's configuration (config.ts). */
export function defaultNodeName(): string {
  return hostname();
}

export async function startAgent(o: AgentOptions): Promise<RunningAgent> {
  // An agent without TLS is a test agent: its endpoint stays on loopback (as the aggregator's does).
  if ((o.tls ?? "insecure") === "insecure" && o.http !== undefined) refuseInsecureListen(o.http, "http");
  const node = o.node ?? defaultNodeName();
  const log = o.log.child({ node });
  const metrics = new AgentMetrics();
  const connected = await connectRuntime({
    ...(o.runtime !== undefined ? { runtime: o.runtime } : {}),
    ...(o.dockerSocket !== undefined ? { dockerSocket: o.dockerSocket } : {}),
    ...(o.dockerRoot !== undefined ? { dockerRoot: o.dockerRoot } : {}),
    ...(o.containerdSocket !== undefined ? { containerdSocket: o.containerdSocket } : {}),
    ...(o.containerdNamespace !== undefined ? { containerdNamespace: o.containerdNamespace } : {}),
    ...(o.containerdSnapshots !== undefined ? { containerdSnapshots: o.containerdSnapshots } : {}),
  });
  const runtime = connected.runtime;
  const info = runtime.info;
  if (connected.passedBy !== undefined) log.info({ containerd: connected.passedBy }, "--runtime auto: containerd passed by, reading the Docker engine");
  if (info.driver !== "overlay2" && info.driver !== "overlayfs") {
    log.warn({ runtime: info.kind, driver: info.driver }, "storage is not overlay2/overlayfs: layer directories and mount checks are unavailable");
  }
  // Shadows and switchovers act through the Engine API; on containerd they are not performed (yet).
  const acting = connected.docker !== undefined;
  const docker = connected.docker?.docker ?? new Docker({ socketPath: engineSocket(o.dockerSocket) });
  const procRoot = o.procRoot ?? "/proc";
  const facts = new NodeFacts(procRoot);
  const processes = new ProcessTable(procRoot, new CgroupSampler({ procRoot, ...(o.cgroupRoot !== undefined ? { cgroupRoot: o.cgroupRoot } : {}) }));
  const collector = new LdgCollector({
    runtime,
    node,
    procRoot,
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
  const state = o.dataDir === undefined ? undefined : new AgentState(join(o.dataDir, `agent-${node}`), log);
  const anomaly = new AnomalyScorer({
    ...o.anomaly,
    log,
    metrics,
    imageOf: (id) => collector.container(id)?.image.id,
    ...(state !== undefined ? { modelDir: join(state.dir, "models") } : {}),
  });
  const scanner = o.inventory === false ? undefined : new InventoryScanner(state?.inventory, log, o.inventoryBudget !== undefined ? { budget: o.inventoryBudget } : {});
  const watcher = new EngineWatcher({ runtime, collector, log, metrics, refreshMs: o.refreshMs ?? 2000 });
  // Filled in as their services start; the event wiring below reads them at call time.
  let spool: Spool | undefined;
  let link: AggregatorLink | undefined;
  let http: HttpEndpoint | undefined;

  const hello = (): Hello =>
    create(HelloSchema, {
      node,
      agentVersion: VERSION,
      engineVersion: info.version,
      storageDriver: info.driver,
      runtime: info.kind,
      host: create(HostInfoSchema, facts.host),
    });
  const registry = await readRegistryFiles(o.registryAuth, o.registryCa);
  const proxy = new TcpProxy({ ...o.proxy, log });
  metrics.proxyStats = () => proxy.stats();
  const records = new SwitchoverRecords(state?.switchovers, log);
  const machine = new SwitchoverMachine({
    docker,
    proxy,
    records,
    node,
    log,
    ...(o.switchBounds !== undefined ? { bounds: o.switchBounds } : {}),
    ...(o.switchEngineRetryMs !== undefined ? { engineRetryMs: o.switchEngineRetryMs } : {}),
    onFinished: (r) => metrics.switchovers.inc({ kind: SwitchoverKind[r.kind].toLowerCase(), outcome: SwitchoverOutcome[r.outcome].toLowerCase() }),
  });
  const routes = new ServiceRoutes(docker, proxy, (k) => machine.isBusy(k), log, o.serviceFilter);
  // Also with another handler: shadows of removed originals are removed all the same.
  const commands = new AgentCommands({
    docker,
    log,
    ...(o.signingKeyPub !== undefined ? { signingKeyPub: o.signingKeyPub } : {}),
    noKeyReason: (o.tls ?? "insecure") === "insecure" ? "the agent runs without TLS and no --signing-key-pub: shadows are never used unsigned" : "no signing public key configured (--signing-key-pub)",
    ...(registry.auth !== undefined ? { registryAuth: registry.auth } : {}),
    ...(registry.ca !== undefined ? { registryCa: registry.ca } : {}),
    storedSignatures: o.storedSignatures ?? registrySignatures,
    ...(o.pullTimeoutMs !== undefined ? { pullTimeoutMs: o.pullTimeoutMs } : {}),
    switchovers: machine,
  });
  const handler = o.commandHandler ?? (acting ? commands : notOnContainerd);
  const journal = new CommandJournal(state?.commands, handler, { log, modelUpdate: (a) => anomaly.modelUpdate(a) });
  const newLink = (aggregator: string) =>
    new AggregatorLink({
      address: aggregator,
      tls: o.tls ?? "insecure",
      hello,
      snapshot: () => collector.current(),
      log,
      metrics,
      commands: journal,
      switchovers: records,
      ...(spool !== undefined ? { spool } : {}),
      ...(scanner !== undefined ? { inventories: () => scanner.all() } : {}),
      heartbeat: async () => ({
        at: timestampNow(),
        telemetry: { ...telemetry.status(), anomaly: anomaly.status(), spoolPending: BigInt(spool?.pending ?? 0), spoolDropped: BigInt(spool?.dropped ?? 0) },
        node: await facts.context(),
      }),
      ...(o.heartbeatMs !== undefined ? { heartbeatMs: o.heartbeatMs } : {}),
    });

  const toSpool = (body: SpoolBody) => {
    const s = spool;
    if (s === undefined) return;
    const before = s.dropped;
    s.append(body).then(
      () => {
        if (s.dropped > before) metrics.spoolDropped.inc(s.dropped - before);
        metrics.spoolPending.set(s.pending);
        link?.telemetryAppended();
      },
      (err: unknown) => {
        metrics.spoolFailed.inc();
        log.warn({ err: String(err) }, "cannot spool telemetry");
      },
    );
  };
  // Scored on the way (bounded: a batch never waits longer than the scoring bound), spooled in order.
  telemetry.on("windows", (windows) =>
    anomaly.process(windows, (scored) => {
      for (const batch of windowBatches(scored)) toSpool({ case: "windows", value: { windows: batch } });
    }),
  );
  telemetry.on("detection", (d) => toSpool({ case: "detection", value: d }));
  // Routes change only when a service's container appears or changes state, not on every process change.
  const serviceStates = new Map<string, string>();
  collector.on("upsert", (g) => {
    link?.upsert(g);
    const image = collector.container(g.containerId)?.image;
    if (image !== undefined) scanner?.want(image);
    if (acting && g.labels[SERVICE_LABELS.address] !== undefined && serviceStates.get(g.containerId) !== g.state) {
      serviceStates.set(g.containerId, g.state);
      void routes.refresh();
    }
  });
  scanner?.on("inventory", (inv) => link?.inventory(inv));
  collector.on("delete", (id) => {
    link?.delete(id);
    anomaly.forget(id);
    serviceStates.delete(id);
    if (!acting) return;
    void commands.originalGone(id);
    void routes.refresh();
  });

  // In start order; stopped in reverse, so the state database is the last thing closed.
  const services: Service[] = [
    ...(state !== undefined ? [state] : []),
    service(
      "spool",
      async () => {
        if (state !== undefined) spool = await Spool.open(state.spool, o.spoolMax === undefined ? {} : { maxItems: o.spoolMax });
      },
      () => spool?.close(),
    ),
    // Records loaded before the journal; stopped after it, so a running switchover keeps its proxy.
    service(
      "traffic",
      () => records.load(),
      async () => {
        routes.close();
        await machine.stop();
        await proxy.close();
      },
    ),
    journal,
    // Before the link: interrupted switchovers are finished, then every service address is served.
    service("switchover-recovery", async () => {
      if (!acting) return;
      await recoverInterrupted(journal, machine, records, log);
      await routes.refresh();
    }),
    service("shadows", () => (acting ? commands.sweep() : undefined)),
    service("inventory", () => undefined, () => scanner?.close()),
    service("node-facts", () => facts.start()),
    // Before the telemetry, so its first windows find the models; stopped after it, so no batch is lost.
    anomaly,
    // The exec-event source is chosen first: with --exec-source ebpf and no eBPF, nothing starts.
    partService("telemetry", telemetry),
    partService("engine-watcher", watcher),
    service(
      "link",
      () => {
        if (o.aggregator === undefined) return;
        link = newLink(o.aggregator);
        link.start();
      },
      () => link?.stop(),
    ),
    service(
      "http",
      async () => {
        if (o.http === undefined) return;
        http = await startHttpEndpoint(o.http, [metrics.registry], () => ({
          ok: true,
          detail: `${link === undefined ? "no aggregator configured" : link.connected ? "aggregator connected" : "aggregator unreachable (working on)"}; runtime: ${info.kind} ${info.version}; exec events: ${telemetry.activeExecSource}; ${acting ? servicesDetail(proxy) : "shadows and switchovers: not on containerd"}`,
        }));
      },
      () => http?.close(),
    ),
  ];
  const running = await startServices(services, log);
  let seq = 0;
  const viaJournal = (action: Command["action"], id: string | undefined) => journal.run(create(CommandSchema, { id: id ?? `local-${node}-${Date.now()}-${++seq}`, action }));
  log.info(
    { runtime: info.kind, engine: info.version, driver: info.driver, containers: collector.current().length, aggregator: o.aggregator, execSource: telemetry.activeExecSource, windowSeconds: telemetry.windowSeconds, anomaly: anomaly.status().enabled ? "on (backend logged when its workers are ready)" : "off" },
    "agent started",
  );
  return {
    node,
    runtime: info,
    collector,
    telemetry,
    anomaly,
    inventory: scanner,
    spool,
    link,
    journal,
    commands,
    proxy,
    switchovers: records,
    switchover: (a, id) => viaJournal({ case: "switchover", value: create(SwitchoverSchema, a) }, id),
    rollback: (a, id) => viaJournal({ case: "rollback", value: create(RollbackSchema, a) }, id),
    metrics,
    httpPort: http?.port,
    stop: () => running.stop(),
  };
}

/** On containerd nodes: the sensing half runs; rebuilt shadows are switched to through a Docker engine only. */
const notOnContainerd: CommandHandler = {
  prepareShadow: () => Promise.resolve(refused("prepareShadow")),
  switchover: () => Promise.resolve(refused("switchover")),
  rollback: () => Promise.resolve(refused("rollback")),
};

function refused(action: string): { status: CommandStatus; message: string } {
  return {
    status: CommandStatus.UNIMPLEMENTED,
    message: `this agent reads containerd (--runtime containerd): ${action} acts through a Docker engine and is not performed on containerd nodes yet`,
  };
}

/** /readyz: how many managed services the proxy serves, and how many have no backend now. */
function servicesDetail(proxy: TrafficRedirect): string {
  const stats = proxy.stats();
  const without = stats.filter((s) => s.backend === undefined).length;
  return `services: ${stats.length} served${without > 0 ? `, ${without} without a running container` : ""}`;
}
