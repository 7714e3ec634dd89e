/**
 * QueryService: the read side for the CLI and other tools, served from the store.
 */
import type * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import {
  ContainerSummarySchema,
  GraphEvent_Type,
  GraphEventSchema,
  AgentSummarySchema,
  ListAgentsResponseSchema,
  ListContainersResponseSchema,
  ListDetectionsResponseSchema,
  ListWindowsResponseSchema,
  QueryService,
  TelemetryEventSchema,
  type ContainerSummary,
} from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { GraphStore } from "../store/graph-store.js";
import type { TelemetryStore } from "../store/telemetry-store.js";
import type { AgentIngest } from "../ingest/agent-service.js";
import type { Detection, WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";

const REF = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/;

export function summarize(g: LayerGraph): ContainerSummary {
  let processes = 0;
  let drift = false;
  for (const l of g.layers) {
    processes += l.processes.length;
    drift ||= l.drift;
  }
  return create(ContainerSummarySchema, {
    containerId: g.containerId,
    containerName: g.containerName,
    image: g.image,
    node: g.node,
    state: g.state,
    layerCount: g.layers.length,
    processCount: processes,
    drift,
    ...(g.observedAt !== undefined ? { observedAt: g.observedAt } : {}),
  });
}

/** Finds a graph by full id, unique id prefix (4+ hex digits) or container name. */
export function findGraph(store: GraphStore, ref: string): LayerGraph {
  if (ref === "") throw new ShadowError(Code.InvalidArgument, "container is required (an id, id prefix or name)");
  if (!REF.test(ref)) throw new ShadowError(Code.InvalidArgument, `${JSON.stringify(ref.slice(0, 80))} is not a container id or name`);
  const exact = store.get(ref);
  if (exact !== undefined) return exact;
  const all = store.all();
  const byName = all.filter((g) => g.containerName === ref);
  if (byName.length === 1 && byName[0] !== undefined) return byName[0];
  if (/^[0-9a-f]{4,63}$/.test(ref)) {
    const byPrefix = all.filter((g) => g.containerId.startsWith(ref));
    if (byPrefix.length === 1 && byPrefix[0] !== undefined) return byPrefix[0];
    if (byPrefix.length > 1) throw new ShadowError(Code.InvalidArgument, `id prefix ${ref} matches ${byPrefix.length} containers; give more digits`);
  }
  if (byName.length > 1) throw new ShadowError(Code.InvalidArgument, `name ${ref} matches containers on ${byName.length} nodes; use the id`);
  throw new ShadowError(Code.NotFound, `no container ${ref} is known`);
}

const NODE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,252}$/;

function checkNode(node: string): string | undefined {
  if (node === "") return undefined;
  if (!NODE.test(node)) throw new ShadowError(Code.InvalidArgument, `${JSON.stringify(node.slice(0, 80))} is not a node name`);
  return node;
}

function clampLimit(n: number, def: number): number {
  return n === 0 ? def : Math.min(n, 100_000);
}

export interface QueryDeps {
  store: GraphStore;
  telemetry: TelemetryStore;
  ingest: AgentIngest;
  metrics: AggregatorMetrics;
}

export function queryServiceImpl({ store, telemetry, ingest, metrics }: QueryDeps): grpc.UntypedServiceImplementation {
  const m = QueryService.method;
  /** Container id for an optional reference; the graph may be gone while its telemetry remains. */
  const containerFilter = (ref: string): string | undefined => {
    if (ref === "") return undefined;
    if (/^[0-9a-f]{64}$/.test(ref)) return ref;
    return findGraph(store, ref).containerId;
  };
  return {
    listAgents: unaryHandler(m.listAgents, async () => {
      const connected = new Set(ingest.connectedNodes());
      const agents = store
        .nodeList()
        .sort((a, b) => a.node.localeCompare(b.node))
        .map((n) => {
          const st = ingest.status(n.node);
          const c = telemetry.stats(n.node);
          return create(AgentSummarySchema, {
            node: n.node,
            connected: connected.has(n.node),
            agentVersion: n.agentVersion,
            lastSeen: timestampFromDate(st?.at ?? new Date(n.lastSeen)),
            ...(st?.telemetry !== undefined ? { telemetry: st.telemetry } : {}),
            ...(st?.node !== undefined ? { nodeContext: st.node } : {}),
            windows: BigInt(c.windows),
            detections: BigInt(c.detections),
            link: ingest.linkView(n.node),
          });
        });
      return create(ListAgentsResponseSchema, { agents });
    }),
    listWindows: unaryHandler(m.listWindows, async (req) => {
      const node = checkNode(req.node);
      const containerId = containerFilter(req.container);
      const windows = await telemetry.windows({ ...(node ? { node } : {}), ...(containerId ? { containerId } : {}) }, clampLimit(req.limit, 1000));
      return create(ListWindowsResponseSchema, { windows });
    }),
    listDetections: unaryHandler(m.listDetections, async (req) => {
      const node = checkNode(req.node);
      const containerId = containerFilter(req.container);
      const detections = await telemetry.detections({ ...(node ? { node } : {}), ...(containerId ? { containerId } : {}) }, clampLimit(req.limit, 1000));
      return create(ListDetectionsResponseSchema, { detections });
    }),
    watchTelemetry: serverStreamHandler(m.watchTelemetry, async (req, call) => {
      const node = checkNode(req.node);
      const containerId = containerFilter(req.container);
      const wanted = (n: string, c: string) => (node === undefined || n === node) && (containerId === undefined || c === containerId);
      const onWindow = (w: WindowSummary) => {
        if (wanted(w.node, w.containerId)) call.write(create(TelemetryEventSchema, { body: { case: "window", value: w } }));
      };
      const onDetection = (d: Detection) => {
        if (wanted(d.node, d.containerId)) call.write(create(TelemetryEventSchema, { body: { case: "detection", value: d } }));
      };
      telemetry.on("window", onWindow);
      telemetry.on("detection", onDetection);
      metrics.watchers.inc();
      const stop = () => {
        telemetry.off("window", onWindow);
        telemetry.off("detection", onDetection);
        metrics.watchers.dec();
      };
      call.once("cancelled", stop);
      call.once("close", stop);
      for (const w of telemetry.latestWindows()) if (store.get(w.containerId) !== undefined) onWindow(w);
      call.write(create(TelemetryEventSchema, { body: { case: "snapshotDone", value: true } }));
    }),
    listContainers: unaryHandler(m.listContainers, async (req) => {
      const list = store
        .all()
        .filter((g) => req.node === "" || g.node === req.node)
        .sort((a, b) => a.node.localeCompare(b.node) || a.containerName.localeCompare(b.containerName))
        .map(summarize);
      return create(ListContainersResponseSchema, { containers: list });
    }),
    getLayerGraph: unaryHandler(m.getLayerGraph, async (req) => findGraph(store, req.container)),
    watchGraphs: serverStreamHandler(m.watchGraphs, async (req, call) => {
      const wanted = (node: string) => req.node === "" || node === req.node;
      const onUpsert = (g: LayerGraph) => {
        if (wanted(g.node)) call.write(create(GraphEventSchema, { type: GraphEvent_Type.UPSERT, containerId: g.containerId, graph: g }));
      };
      const onDelete = (id: string, node: string) => {
        if (wanted(node)) call.write(create(GraphEventSchema, { type: GraphEvent_Type.DELETE, containerId: id }));
      };
      // Subscribe before the snapshot so nothing falls between the two.
      store.on("upsert", onUpsert);
      store.on("delete", onDelete);
      metrics.watchers.inc();
      const stop = () => {
        store.off("upsert", onUpsert);
        store.off("delete", onDelete);
        metrics.watchers.dec();
      };
      call.once("cancelled", stop);
      call.once("close", stop);
      for (const g of store.all()) onUpsert(g);
      call.write(create(GraphEventSchema, { type: GraphEvent_Type.SNAPSHOT_DONE }));
    }),
  };
}
