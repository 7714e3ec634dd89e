/**
 * AdminService.DeployModel: a trained anomaly model (from `shadowlayer train`) goes to the agents
 * that run its image (every known agent for the generic model) as a ModelUpdate command on their
 * streams, the way PrepareShadow goes; each node's answer comes back as loaded, rejected (the
 * agent refused the artifact, with its reason) or unreachable (not connected, or no answer in
 * time). The artifact is validated here first, so a corrupt one reaches no agent.
 */
import type * as grpc from "@grpc/grpc-js";
import { createHash, randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { CommandStatus } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AdminService, DeployModelResponseSchema, ModelDeploymentSchema, type ModelDeployment } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import { unaryHandler } from "../../common/grpc.js";
import type { Logger } from "../../common/log.js";
import type { AgentIngest } from "../ingest/agent-service.js";
import type { GraphStore } from "../store/graph-store.js";
import { parseArtifact } from "../../models/artifact.js";

/** What an artifact is, once validated. */
export interface DeployableModel {
  version: string;
  /** The image it scores; undefined for the node-level generic model. */
  imageId: string | undefined;
}

export interface ModelDeployDeps {
  graphs: Pick<GraphStore, "all" | "nodeList">;
  ingest: Pick<AgentIngest, "sendCommand" | "connectedNodes">;
  /** Validates an artifact; throws with the reason it is refused (default: deployableArtifact). */
  validate?: (artifact: Uint8Array) => DeployableModel;
  log: Logger;
  /** How long a node may take to validate and load it (default 30 s). */
  timeoutMs?: number;
}

/** The largest artifact the link carries: the agents' 4 MiB message limit, less the command's framing. */
export const MAX_DEPLOY_BYTES = 4 * 1024 * 1024 - 4096;
const IMAGE_ID = /^sha256:[0-9a-f]{64}$/;
const NODE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,252}$/;

/** An artifact as models/artifact.ts reads it (a ModelError names what is wrong): its version and image. */
export function deployableArtifact(artifact: Uint8Array): DeployableModel {
  const a = parseArtifact(artifact);
  return { version: a.manifest.version, imageId: a.manifest.scope.kind === "image" ? a.manifest.scope.imageId : undefined };
}

/** The nodes a model goes to: those with a container of its image, or every known node for the generic model. */
export function deployTargets(graphs: ModelDeployDeps["graphs"], imageId: string | undefined): string[] {
  const nodes = new Set<string>();
  if (imageId === undefined) for (const n of graphs.nodeList()) nodes.add(n.node);
  else for (const g of graphs.all()) if (g.imageId === imageId && g.node !== "" && g.state !== "removing" && g.state !== "dead") nodes.add(g.node);
  return [...nodes].sort();
}

export function modelAdminImpl(d: ModelDeployDeps): grpc.UntypedServiceImplementation {
  return {
    deployModel: unaryHandler(AdminService.method.deployModel, async (req) => {
      if (req.artifact.length === 0) throw new ShadowError(Code.InvalidArgument, "artifact is required (a model file from `shadowlayer train`)");
      if (req.artifact.length > MAX_DEPLOY_BYTES) throw new ShadowError(Code.InvalidArgument, `artifact of ${req.artifact.length} bytes is over the ${MAX_DEPLOY_BYTES} bytes an agent's link carries`);
      if (req.node !== "" && !NODE.test(req.node)) throw new ShadowError(Code.InvalidArgument, `${JSON.stringify(req.node.slice(0, 80))} is not a node name`);
      let model: DeployableModel;
      try {
        model = (d.validate ?? deployableArtifact)(req.artifact);
      } catch (err) {
        throw new ShadowError(Code.InvalidArgument, `artifact refused: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      if (model.imageId !== undefined && !IMAGE_ID.test(model.imageId)) throw new ShadowError(Code.InvalidArgument, `artifact refused: its image ${JSON.stringify(model.imageId.slice(0, 80))} is not an image id`);
      const scope = model.imageId === undefined ? "the generic model" : `image ${model.imageId}`;
      let targets = deployTargets(d.graphs, model.imageId);
      if (req.node !== "") {
        if (!targets.includes(req.node)) throw new ShadowError(Code.FailedPrecondition, model.imageId === undefined ? `node ${req.node} is not known to this aggregator` : `node ${req.node} runs no container of ${scope}`);
        targets = [req.node];
      }
      if (targets.length === 0) throw new ShadowError(Code.FailedPrecondition, `no node runs a container of ${scope}: nothing to deploy it to`);
      const connected = new Set(d.ingest.connectedNodes());
      const tag = createHash("sha256").update(model.version).update(model.imageId ?? "generic").digest("hex").slice(0, 16);
      const log = d.log.child({ model: model.version, image: model.imageId ?? "generic" });
      const deployments = await Promise.all(
        targets.map(async (node): Promise<ModelDeployment> => {
          const answer = (outcome: "loaded" | "rejected" | "unreachable", message: string) => {
            log.info({ node, outcome, message }, "model deployment");
            return create(ModelDeploymentSchema, { node, outcome, message });
          };
          if (!connected.has(node)) return answer("unreachable", "the node's agent is not connected");
          try {
            const r = await d.ingest.sendCommand(
              node,
              { id: `model-${tag}-${randomBytes(4).toString("hex")}`, action: { case: "modelUpdate", value: { imageId: model.imageId ?? "", artifact: req.artifact, version: model.version } } },
              d.timeoutMs ?? 30_000,
            );
            if (r.status === CommandStatus.OK) return answer("loaded", r.message);
            if (r.status === CommandStatus.UNIMPLEMENTED) return answer("rejected", `the agent does not take model updates: ${r.message || "unimplemented"}`);
            return answer("rejected", r.message || CommandStatus[r.status]);
          } catch (err) {
            return answer("unreachable", err instanceof Error ? err.message : String(err));
          }
        }),
      );
      return create(DeployModelResponseSchema, { version: model.version, imageId: model.imageId ?? "", deployments });
    }),
  };
}
