/**
 * What the client commands use when they run, in one module that the first of them to run loads
 * (`runtime()` in action.ts): the protobuf, gRPC, TLS and schema libraries take most of a second to
 * load, and `--help` or a mistyped flag needs none of them.
 */
export { AdminService, GraphEvent_Type, QueryService } from "../proto/gen/shadowlayer/v1/query_pb.js";
export { initCerts } from "../common/certs.js";
export { callServerStream } from "../common/grpc.js";
export { connect, follow, query } from "./client.js";
export { listAll } from "./pages.js";
export { policySetInput, resolveCertsConfig, resolveLimit } from "./config.js";
export { containerJson, renderContainers } from "./containers-format.js";
export { renderTree, toLdgJson } from "./ldg-format.js";
export { renderTable } from "./table.js";
export { agentJson, renderAgents } from "./agents-format.js";
export { detectionJson, renderDetections, renderTop, windowJson } from "./telemetry-format.js";
export { cyclonedx } from "./sbom.js";
export { RebuildEvent_Type } from "../proto/gen/shadowlayer/v1/rebuild_pb.js";
export { Code, ShadowError } from "../common/errors.js";
export { rebuildEventJson, rebuildJobJson, rebuildsJson, renderRebuildJob, renderRebuilds, renderRebuildsView, stateLabel } from "./rebuilds-format.js";
export { feedJson, inventoryLine, policyJson, renderFeeds, renderScores, renderVulns, scoresJson, vulnsJson } from "./vulns-format.js";
export { exportWindow, importWindow, renderWindows } from "./window-export.js";
export { fetchWindows } from "./window-fetch.js";
export { parseTimeRange } from "./time-range.js";
