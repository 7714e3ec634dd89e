/**
 * QueryService: the read side for the CLI and other tools, served from the store.
 */
import type * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { LayerGraphSchema, type LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
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
  StoredWindowSchema,
  TelemetryEventSchema,
  type AgentSummary,
  type ContainerSummary,
  type StoredWindow,
  type ListWindowsRequest,
  type GraphEvent,
  type TelemetryEvent,
} from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { GraphStore } from "../store/graph-store.js";
import type { TelemetryFilter, TelemetryStore } from "../store/telemetry-store.js";
import type { AgentIngest } from "../ingest/agent-service.js";
import { DetectionSchema, WindowSummarySchema, type Detection, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { timestampFromDate, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { encodedSize } from "../../common/encoded-size.js";
import { changesOf, runBoundedWatch } from "./bounded-watch.js";
import { pageOf, pageOfEntries, type PageKey, type PageRequest } from "./pages.js";

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
    pod: g.pod,
    namespace: g.namespace,
    runtime: g.runtime,
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

/**
 * A page of the newest `limit` windows or detections matching `filter`, oldest first. The page
 * key is the item's level key and its place in the listing, so that the listing ends after
 * `limit` items however many arrive while it is paged.
 */
async function telemetryPage<K extends "windows" | "detections">(
  telemetry: TelemetryStore,
  kind: K,
  filter: TelemetryFilter,
  req: PageRequest & { limit: number },
  size: (t: K extends "windows" ? StoredWindow : Detection) => number,
) {
  const limit = clampLimit(req.limit, 1000);
  return pageOfEntries(
    async function* (after: PageKey | undefined) {
      let from: { gte: string } | { gt: string };
      let place = Number(after?.[1] ?? 0);
      if (after === undefined) {
        const start = await telemetry.listingStart(kind, filter, limit);
        if (start === undefined) return;
        from = { gte: start };
      } else {
        from = { gt: String(after[0]) };
      }
      for await (const e of telemetry.entries(kind, filter, from)) {
        if (++place > limit) return;
        yield { key: [e.key, place], item: e.item };
      }
    },
    { size, query: `${kind} ${filter.node ?? ""} ${filter.containerId ?? ""} ${limit}` },
    req,
  );
}

/** A Timestamp as milliseconds, checked: before 1970 or past year 10000 is refused. */
function rangeMs(t: Timestamp | undefined, name: string, open: number): number {
  if (t === undefined) return open;
  const ms = timestampMs(t);
  if (!Number.isFinite(ms) || ms < 0 || ms > 253_402_300_800_000) throw new ShadowError(Code.InvalidArgument, `${name}: ${ms} ms is not a time this aggregator stores`);
  return ms;
}

/**
 * A page of the windows that ended in [since, until), by end time: the whole range, page after
 * page (`limit`, when given, stops the listing after that many). The page key is the window's
 * time index key and its place, so a walk lists each window of the range once, whatever arrives.
 */
async function windowRangePage(telemetry: TelemetryStore, filter: TelemetryFilter, req: ListWindowsRequest, size: (w: StoredWindow) => number) {
  const sinceMs = rangeMs(req.since, "since", 0);
  const untilMs = rangeMs(req.until, "until", Number.MAX_SAFE_INTEGER);
  if (untilMs <= sinceMs) throw new ShadowError(Code.InvalidArgument, `until (${new Date(untilMs).toISOString()}) must be after since (${new Date(sinceMs).toISOString()})`);
  const limit = req.limit === 0 ? Number.POSITIVE_INFINITY : req.limit;
  return pageOfEntries(
    async function* (after: PageKey | undefined) {
      let place = Number(after?.[1] ?? 0);
      for await (const e of telemetry.windowsEnded(filter, sinceMs, untilMs, after === undefined ? undefined : String(after[0]))) {
        if (++place > limit) return;
        yield { key: [e.key, place], item: e.item };
      }
    },
    { size, query: `windows-range ${filter.node ?? ""} ${filter.containerId ?? filter.containerPrefix ?? ""} ${filter.containerName ?? ""} ${sinceMs} ${untilMs} ${req.limit}` },
    req,
  );
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
  /**
   * The container part of a telemetry filter: a known container by its id; one whose graph is gone
   * (its windows remain, for training) by the id prefix or the name its windows carry.
   */
  const containerPart = (ref: string): TelemetryFilter => {
    try {
      const id = containerFilter(ref);
      return id === undefined ? {} : { containerId: id };
    } catch (err) {
      if (!(err instanceof ShadowError) || err.code !== Code.NotFound) throw err;
      return /^[0-9a-f]{4,63}$/.test(ref) ? { containerPrefix: ref } : { containerName: ref };
    }
  };
  const telemetryFilter = (nodeRef: string, containerRef: string): TelemetryFilter => {
    const node = checkNode(nodeRef);
    const containerId = containerFilter(containerRef);
    return { ...(node ? { node } : {}), ...(containerId ? { containerId } : {}) };
  };
  return {
    listAgents: unaryHandler(m.listAgents, async (req) => {
      const connected = new Set(ingest.connectedNodes());
      const nodes = new Map(store.nodeList().map((n) => [n.node, n]));
      const agent = (node: string): AgentSummary => {
        const n = nodes.get(node);
        const st = ingest.status(node);
        const c = telemetry.stats(node);
        const capped = ingest.caps.refused(node);
        return create(AgentSummarySchema, {
          node,
          connected: connected.has(node),
          agentVersion: n?.agentVersion ?? "",
          lastSeen: timestampFromDate(st?.at ?? new Date(n?.lastSeen ?? 0)),
          ...(st?.telemetry !== undefined ? { telemetry: st.telemetry } : {}),
          ...(st?.node !== undefined ? { nodeContext: st.node } : {}),
          windows: BigInt(c.windows),
          detections: BigInt(c.detections),
          cappedWrites: BigInt(capped?.count ?? 0),
          cappedReason: capped?.reason ?? "",
          link: ingest.linkView(node),
          runtime: n?.runtime ?? "",
          runtimeVersion: n?.engineVersion ?? "",
          storageDriver: n?.storageDriver ?? "",
        });
      };
      // Pages of node names; each page's summaries are made for its nodes only.
      const page = pageOf(
        [...nodes.keys()],
        { key: (n) => [n], size: (n) => n.length + 512, query: "agents" },
        req,
      );
      return create(ListAgentsResponseSchema, { agents: page.items.map(agent), nextPageToken: page.nextPageToken });
    }),
    listWindows: unaryHandler(m.listWindows, async (req) => {
      if (req.since === undefined && req.until === undefined) {
        const filter = telemetryFilter(req.node, req.container);
        const page = await telemetryPage(telemetry, "windows", filter, req, (w) => encodedSize(StoredWindowSchema, w));
        return create(ListWindowsResponseSchema, { windows: page.items, nextPageToken: page.nextPageToken });
      }
      const node = checkNode(req.node);
      const filter: TelemetryFilter = { ...(node ? { node } : {}), ...containerPart(req.container) };
      const page = await windowRangePage(telemetry, filter, req, (w) => encodedSize(StoredWindowSchema, w));
      return create(ListWindowsResponseSchema, { windows: page.items, nextPageToken: page.nextPageToken });
    }),
    listDetections: unaryHandler(m.listDetections, async (req) => {
      const filter = telemetryFilter(req.node, req.container);
      const page = await telemetryPage(telemetry, "detections", filter, req, (d) => encodedSize(DetectionSchema, d));
      return create(ListDetectionsResponseSchema, { detections: page.items, nextPageToken: page.nextPageToken });
    }),
    watchTelemetry: serverStreamHandler(m.watchTelemetry, async (req, call) => {
      const node = checkNode(req.node);
      const containerId = containerFilter(req.container);
      const wanted = (n: string, c: string) => (node === undefined || n === node) && (containerId === undefined || c === containerId);
      const windowEvent = (w: WindowSummary) => create(TelemetryEventSchema, { body: { case: "window", value: w } });
      await runBoundedWatch<TelemetryEvent>(call, {
        kind: "telemetry",
        metrics,
        size: (e) => 16 + (e.body.case === "window" ? encodedSize(WindowSummarySchema, e.body.value) : e.body.case === "detection" ? encodedSize(DetectionSchema, e.body.value) : 0),
        subscribe: (send) => {
          const onWindow = (w: WindowSummary) => {
            if (wanted(w.node, w.containerId)) send(windowEvent(w));
          };
          const onDetection = (d: Detection) => {
            if (wanted(d.node, d.containerId)) send(create(TelemetryEventSchema, { body: { case: "detection", value: d } }));
          };
          telemetry.on("window", onWindow);
          telemetry.on("detection", onDetection);
          return () => {
            telemetry.off("window", onWindow);
            telemetry.off("detection", onDetection);
          };
        },
        snapshot: () =>
          telemetry
            .latestWindows()
            .filter((w) => wanted(w.node, w.containerId))
            .map((w) => () => {
              const latest = telemetry.latestWindow(w.containerId);
              return latest !== undefined && store.get(latest.containerId) !== undefined ? windowEvent(latest) : undefined;
            }),
        snapshotDone: () => create(TelemetryEventSchema, { body: { case: "snapshotDone", value: true } }),
        resync: () => create(TelemetryEventSchema, { body: { case: "resync", value: true } }),
      });
    }),
    listContainers: unaryHandler(m.listContainers, async (req) => {
      const node = checkNode(req.node);
      const page = pageOf(
        store.all().filter((g) => node === undefined || g.node === node),
        // Sized by their graphs' strings, which summaries copy: no summary is made for another page.
        { key: (g) => [g.node, g.containerName, g.containerId], size: (g) => g.containerId.length + g.containerName.length + g.image.length + g.node.length + g.state.length + 48, query: `containers ${node ?? ""}` },
        req,
      );
      return create(ListContainersResponseSchema, { containers: page.items.map(summarize), nextPageToken: page.nextPageToken });
    }),
    getLayerGraph: unaryHandler(m.getLayerGraph, async (req) => findGraph(store, req.container)),
    watchGraphs: serverStreamHandler(m.watchGraphs, async (req, call) => {
      const wanted = (node: string) => req.node === "" || node === req.node;
      const upsert = (g: LayerGraph) => create(GraphEventSchema, { type: GraphEvent_Type.UPSERT, containerId: g.containerId, graph: g });
      await runBoundedWatch<GraphEvent>(call, {
        kind: "graphs",
        metrics,
        size: (e) => 80 + (e.graph !== undefined ? encodedSize(LayerGraphSchema, e.graph) : 0),
        ...changesOf(store, wanted, upsert, (id) => create(GraphEventSchema, { type: GraphEvent_Type.DELETE, containerId: id })),
        snapshotDone: () => create(GraphEventSchema, { type: GraphEvent_Type.SNAPSHOT_DONE }),
        resync: () => create(GraphEventSchema, { type: GraphEvent_Type.RESYNC }),
      });
    }),
  };
}
