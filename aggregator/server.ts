/**
 * The aggregator process: gRPC (AgentService, QueryService, AdminService, health, reflection)
 * over mTLS by default, the level store, and the HTTP endpoint for metrics and probes.
 */
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath } from "grpc-health-check";
import { AgentService } from "../proto/gen/shadowlayer/v1/agent_pb.js";
import { QueryService } from "../proto/gen/shadowlayer/v1/query_pb.js";
import type { TlsMaterial } from "../common/certs.js";
import { bindServer, serverCredentials, serviceDefinition } from "../common/grpc.js";
import { startHttpEndpoint, type HttpEndpoint } from "../common/http-endpoint.js";
import { refuseInsecureListen } from "../common/listen-address.js";
import { privateDir } from "../common/private-files.js";
import type { Logger } from "../common/log.js";
import { PROTO_DIR } from "../common/paths.js";
import type { StoreRecoveryOptions } from "../common/store-health.js";
import { queryServiceImpl } from "./api/query-service.js";
import { AgentIngest } from "./ingest/agent-service.js";
import type { NodeCapLimits } from "./ingest/node-caps.js";
import { AggregatorMetrics } from "./metrics.js";
import { GraphStore } from "./store/graph-store.js";
import { TelemetryStore } from "./store/telemetry-store.js";
import { AdminService } from "../proto/gen/shadowlayer/v1/query_pb.js";
import type { Policy } from "../proto/gen/shadowlayer/v1/vulns_pb.js";
import { adminImpl } from "./api/admin-service.js";
import { modelAdminImpl } from "./api/model-deploy.js";
import { serviceGuard } from "./api/authorize.js";
import { vulnsQueryImpl } from "./api/vulns-service.js";
import type { FeedConfig } from "./feeds/feed-config.js";
import { FeedManager } from "./feeds/manager.js";
import { ScoreEngine } from "./risk/score-engine.js";
import type { RebuildOptions } from "./rebuild/rebuild-options.js";
import { startRebuildStage, type RebuildStage } from "./rebuild/rebuild-stage.js";
import { rebuildAdminImpl, rebuildQueryImpl } from "./api/rebuild-service.js";
import { RebuildScheduler, type RebuildSchedulerOptions } from "./rebuild/scheduler.js";
import { switchoverAdminImpl, switchoverQueryImpl } from "./api/switchover-service.js";
import { DriftTrigger } from "./control/drift-trigger.js";
import { ProactiveTrigger } from "./control/proactive-trigger.js";
import { SwitchoverControl } from "./control/switchover-control.js";
import type { SwitchoverRequester } from "./control/types.js";
import { SwitchoverStore } from "./store/switchover-store.js";
import { startFalcoIntake, type FalcoIntake, type FalcoIntakeOptions } from "./control/falco-intake.js";

export interface AggregatorOptions {
  dataDir: string;
  /** host:port for gRPC; port 0 picks a free one. */
  listen: string;
  /** host:port for /metrics, /healthz, /readyz; none when absent. */
  http?: string;
  tls: TlsMaterial | "insecure";
  log: Logger;
  /** Vulnerability feeds (OSV, KEV, EPSS, NVD); none by default. */
  feeds?: FeedConfig[];
  /** Policies to seed the store with (a policy changed through AdminService keeps its change). */
  policies?: Policy[];
  /** Pace of the retries after a storage error (disk full): 1 s doubling to 30 s by default. */
  storeRecovery?: StoreRecoveryOptions;
  /** How much one node may store (default: DEFAULT_NODE_CAPS). */
  caps?: NodeCapLimits;
  /** The rebuild stage (builders, registry, signing); none: no shadows are planned. */
  rebuild?: RebuildOptions;
  /**
   * A rebuild scheduler over this pool and runner (which their owner closes), planning from the
   * scores; without one (or a rebuild stage that opens its own) the rebuild calls answer UNIMPLEMENTED.
   */
  rebuildScheduler?: Omit<RebuildSchedulerOptions, "db" | "log" | "scores" | "graphs">;
  /** The Falco alert intake (`--falco-listen`); none when absent. */
  falco?: FalcoIntakeOptions;
}

export interface RunningAggregator {
  port: number;
  httpPort: number | undefined;
  store: GraphStore;
  telemetry: TelemetryStore;
  feeds: FeedManager;
  scores: ScoreEngine;
  ingest: AgentIngest;
  metrics: AggregatorMetrics;
  rebuilds: RebuildScheduler | undefined;
  /** The whole stage (pool, pipeline, dispatch, GC) when `rebuild` options started it. */
  rebuildStage: RebuildStage | undefined;
  /** Switchovers and rollbacks: every trigger (the Falco intake too) asks here. */
  control: SwitchoverRequester;
  /** Every switchover and rollback record (agents' reports and the control's decisions). */
  switchovers: SwitchoverStore;
  /** The Falco alert intake when `falco` options started it. */
  falco: FalcoIntake | undefined;
  stop(): Promise<void>;
}

function reflectionService(): ReflectionService {
  const def = protoLoader.loadSync(["shadowlayer/v1/agent.proto", "shadowlayer/v1/query.proto", "shadowlayer/v1/rebuild.proto", "shadowlayer/v1/switchover.proto", "shadowlayer/v1/telemetry.proto", "shadowlayer/v1/vulns.proto", healthProtoPath], {
    includeDirs: [PROTO_DIR],
    keepCase: true,
  });
  return new ReflectionService(def);
}

export async function startAggregator(o: AggregatorOptions): Promise<RunningAggregator> {
  const log = o.log.child({ component: "aggregator" });
  if (o.tls === "insecure") {
    refuseInsecureListen(o.listen, "listen");
    if (o.http !== undefined) refuseInsecureListen(o.http, "http");
    log.warn("*** INSECURE: gRPC without TLS or client certificates; anyone who can reach the port can publish and read graphs ***");
  }
  await privateDir(o.dataDir, log);
  const store = await GraphStore.open(join(o.dataDir, "store"), log, o.storeRecovery);
  const metrics = new AggregatorMetrics();
  metrics.graphs.set(store.size);
  metrics.storeFailing.set(0);
  const telemetry = await TelemetryStore.open(store.db);
  store.on("delete", (id) => telemetry.forgetContainer(id));
  const feeds = await FeedManager.open(store.db, o.feeds ?? [], log);
  const scores = await ScoreEngine.open({ db: store.db, graphs: store, telemetry, feeds, log, ...(o.policies !== undefined ? { policies: o.policies } : {}) });
  const switchovers = await SwitchoverStore.open(store.db);
  const ingest = new AgentIngest(store, telemetry, log, metrics, o.tls !== "insecure", scores, o.caps, switchovers);
  let stage: RebuildStage | undefined;
  try {
    stage = o.rebuildScheduler === undefined && o.rebuild !== undefined ? await startRebuildStage(o.rebuild, { db: store.db, dataDir: o.dataDir, graphs: store, scores, feeds, ingest, log }) : undefined;
  } catch (err) {
    await store.close();
    throw err;
  }
  const rebuilds = stage?.scheduler ?? (o.rebuildScheduler === undefined ? undefined : await RebuildScheduler.open({ ...o.rebuildScheduler, db: store.db, log, scores, graphs: store }));
  const control = new SwitchoverControl({ graphs: store, records: switchovers, ingest, ...(rebuilds !== undefined ? { jobs: rebuilds } : {}), log, metrics });
  const triggers = [
    ...(rebuilds !== undefined ? [new ProactiveTrigger({ scores, graphs: store, jobs: rebuilds, records: switchovers, control, log, metrics })] : []),
    new DriftTrigger({ detections: telemetry, graphs: store, policyFor: (labels, pod) => scores.policyFor(labels, pod), records: switchovers, control, log, metrics }),
  ];
  control.start();
  for (const t of triggers) t.start();
  const stopControl = () => {
    for (const t of triggers) t.stop();
    control.stop();
  };
  const server = new grpc.Server({ "grpc.keepalive_permit_without_calls": 1, "grpc.http2.min_ping_interval_without_data_ms": 5000 });
  const guard = serviceGuard(log, o.tls !== "insecure");
  server.addService(serviceDefinition(AgentService), guard(AgentService, { connect: ingest.handler }));
  const vulnDeps = { store, scores, feeds, metrics };
  server.addService(serviceDefinition(QueryService), guard(QueryService, { ...queryServiceImpl({ store, telemetry, ingest, metrics }), ...vulnsQueryImpl(vulnDeps), ...(rebuilds !== undefined ? rebuildQueryImpl({ scheduler: rebuilds, metrics }) : {}), ...switchoverQueryImpl({ records: switchovers, metrics }) }));
  server.addService(serviceDefinition(AdminService), guard(AdminService, { ...adminImpl(vulnDeps), ...(rebuilds !== undefined ? rebuildAdminImpl({ scheduler: rebuilds }) : {}), ...switchoverAdminImpl({ control }), ...modelAdminImpl({ graphs: store, ingest, log }) }));
  const health = new HealthImplementation({
    "": "SERVING",
    [AgentService.typeName]: "SERVING",
    [QueryService.typeName]: "SERVING",
    [AdminService.typeName]: "SERVING",
  });
  health.addToServer(server);
  // While the store cannot write, the services that write are not serving; QueryService reads on.
  const writeServices = [AgentService.typeName, AdminService.typeName];
  store.health.on("failing", () => {
    metrics.storeFailing.set(1);
    for (const s of writeServices) health.setStatus(s, "NOT_SERVING");
  });
  store.health.on("recovered", () => {
    metrics.storeFailing.set(0);
    for (const s of writeServices) health.setStatus(s, "SERVING");
  });
  reflectionService().addToServer(server);
  let port: number;
  try {
    port = await bindServer(server, o.listen, serverCredentials(o.tls));
  } catch (err) {
    stopControl();
    await (stage?.stop() ?? rebuilds?.close());
    await store.close();
    throw err;
  }
  let falco: FalcoIntake | undefined;
  try {
    falco = o.falco === undefined ? undefined : await startFalcoIntake(o.falco, { requester: control, tls: o.tls, log, registry: metrics.registry });
  } catch (err) {
    server.forceShutdown();
    stopControl();
    await (stage?.stop() ?? rebuilds?.close());
    await store.close();
    throw err;
  }
  let http: HttpEndpoint | undefined;
  if (o.http !== undefined) {
    http = await startHttpEndpoint(o.http, [metrics.registry], () => {
      const f = store.health.failing;
      if (f !== undefined) return { ok: false, detail: `store failing since ${f.since.toISOString()}: ${f.error} (reads are served, writes are refused until it recovers)` };
      return { ok: true, detail: `serving; ${ingest.connectedNodes().length} agents connected` };
    });
  }
  feeds.start();
  log.info({ listen: o.listen, port, graphs: store.size, tls: o.tls !== "insecure", feeds: (o.feeds ?? []).map((f) => `${f.name}=${f.source}`) }, "aggregator listening");
  return {
    port,
    httpPort: http?.port,
    store,
    telemetry,
    feeds,
    scores,
    ingest,
    metrics,
    rebuilds,
    rebuildStage: stage,
    control,
    switchovers,
    falco,
    async stop() {
      health.setStatus("", "NOT_SERVING");
      stopControl();
      feeds.stop();
      scores.stop();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
      await http?.close();
      await falco?.close();
      await (stage?.stop() ?? rebuilds?.close());
      await feeds.idle().catch(() => undefined);
      await store.close();
    },
  };
}
