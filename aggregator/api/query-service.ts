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
  ListContainersResponseSchema,
  QueryService,
  type ContainerSummary,
} from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { serverStreamHandler, unaryHandler } from "../../common/grpc.js";
import type { AggregatorMetrics } from "../metrics.js";
import type { GraphStore } from "../store/graph-store.js";

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

export function queryServiceImpl(store: GraphStore, metrics: AggregatorMetrics): grpc.UntypedServiceImplementation {
  const m = QueryService.method;
  return {
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
