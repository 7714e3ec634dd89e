/**
 * How agents look for people (a table) and machines (JSON with snake_case keys): their exec-event
 * source, spool and node load, anomaly scoring (backend, models, windows scored, event-loop delay),
 * and their link, so a node that is cut off reads as such.
 */
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { AgentSummary } from "../proto/gen/shadowlayer/v1/query_pb.js";
import type { AnomalyStatus } from "../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { humanBytes } from "./ldg-format.js";
import { renderTable } from "./table.js";

const iso = (t: Timestamp | undefined) => (t === undefined ? null : timestampDate(t).toISOString());

/** The link's last trouble: the agent's own last error, else why the aggregator saw its stream end. */
function lastLinkError(a: AgentSummary): { text: string; at: Timestamp | undefined } | undefined {
  const agent = a.link?.agent;
  const e = agent?.lastError ? { text: `agent: ${agent.lastError}`, at: agent.lastErrorAt } : undefined;
  const d = a.link?.lastDisconnect ? { text: `aggregator: ${a.link.lastDisconnect}`, at: a.link.lastDisconnectAt } : undefined;
  if (e === undefined || d === undefined) return e ?? d;
  return (e.at?.seconds ?? 0n) >= (d.at?.seconds ?? 0n) ? e : d;
}

function ago(t: Timestamp | undefined, now: number): string {
  if (t === undefined) return "";
  const s = Math.max(0, Math.round((now - timestampDate(t).getTime()) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

function anomalyJson(s: AnomalyStatus | undefined): Record<string, unknown> | null {
  if (s === undefined) return null;
  return {
    enabled: s.enabled,
    backend: s.backend || null,
    backend_reason: s.backendReason || null,
    models: s.models.map((m) => ({
      scope: m.scope,
      scope_id: m.scopeId || null,
      version: m.version,
      feature_version: m.featureVersion,
      training_windows: Number(m.trainingWindows),
      created: iso(m.created),
      origin: m.origin,
      backend: m.backend,
    })),
    windows_scored: Number(s.windowsScored),
    worker_restarts: Number(s.workerRestarts),
    event_loop_p99_ms: s.eventLoopP99Ms,
    models_rejected: Number(s.modelsRejected),
    last_rejection: s.lastRejection || null,
  };
}

/** The table's anomaly cells: backend ("off" when disabled), models (image+generic), windows scored, loop p99. */
function anomalyCells(s: AnomalyStatus | undefined): string[] {
  if (s === undefined) return ["?", "?", "?", "?"];
  if (!s.enabled) return ["off", "-", "-", s.eventLoopP99Ms.toFixed(1)];
  const generic = s.models.filter((m) => m.scope === "generic").length;
  const images = s.models.length - generic;
  return [s.backend || "unavailable", `${images}${generic > 0 ? "+generic" : ""}`, String(s.windowsScored), s.eventLoopP99Ms.toFixed(1)];
}

export function agentJson(a: AgentSummary): Record<string, unknown> {
  const t = a.telemetry;
  const n = a.nodeContext;
  const l = a.link;
  return {
    node: a.node,
    connected: a.connected,
    agent_version: a.agentVersion,
    runtime: a.runtime || null,
    runtime_version: a.runtimeVersion || null,
    storage_driver: a.storageDriver || null,
    last_seen: iso(a.lastSeen),
    exec_source: t?.execSource ?? null,
    exec_source_reason: t?.execSourceReason ?? null,
    exec_events: Number(t?.execEvents ?? 0),
    exec_events_lost: Number(t?.execEventsLost ?? 0),
    exec_lines_malformed: Number(t?.execLinesMalformed ?? 0),
    vanished: Number(t?.vanished ?? 0),
    spool_pending: Number(t?.spoolPending ?? 0),
    spool_dropped: Number(t?.spoolDropped ?? 0),
    window_seconds: t?.windowSeconds ?? null,
    windows: Number(a.windows),
    detections: Number(a.detections),
    capped_writes: Number(a.cappedWrites),
    capped_reason: a.cappedReason || null,
    anomaly: anomalyJson(t?.anomaly),
    link: {
      synced: l?.synced ?? false,
      last_ack: iso(l?.lastAck),
      reconnects: Number(l?.agent?.reconnects ?? 0),
      last_error: l?.agent?.lastError || null,
      last_error_at: iso(l?.agent?.lastErrorAt),
      dropped_oversize: Number(l?.agent?.droppedOversize ?? 0),
      truncated: Number(l?.agent?.truncated ?? 0),
      last_disconnect: l?.lastDisconnect || null,
      last_disconnect_at: iso(l?.lastDisconnectAt),
    },
    node_context: n && {
      load_percent: n.loadPercent,
      load1: n.load1,
      memory_total_bytes: Number(n.memoryTotalBytes),
      memory_available_bytes: Number(n.memoryAvailableBytes),
      disk_total_bytes: Number(n.diskTotalBytes),
      disk_used_bytes: Number(n.diskUsedBytes),
    },
  };
}

export function renderAgents(as: readonly AgentSummary[], now = Date.now()): string {
  return renderTable(
    ["NODE", "CONNECTED", "RUNTIME", "EXEC SOURCE", "EXECS", "LOST", "SPOOLED", "DROPPED", "OVERSIZE", "WINDOWS", "DETECTIONS", "ANOMALY", "MODELS", "SCORED", "LOOP P99 MS", "LOAD%", "MEM FREE", "CAPPED", "LAST LINK ERROR"],
    as.map((a) => {
      const err = lastLinkError(a);
      return [
        a.node,
        a.connected ? "yes" : "no",
        a.runtime || "?",
        a.telemetry?.execSource || "?",
        String(a.telemetry?.execEvents ?? 0),
        String(a.telemetry?.execEventsLost ?? 0),
        a.telemetry === undefined ? "?" : String(a.telemetry.spoolPending),
        String(a.telemetry?.spoolDropped ?? 0),
        String(a.link?.agent?.droppedOversize ?? 0),
        String(a.windows),
        String(a.detections),
        ...anomalyCells(a.telemetry?.anomaly),
        a.nodeContext ? a.nodeContext.loadPercent.toFixed(0) : "?",
        a.nodeContext ? humanBytes(a.nodeContext.memoryAvailableBytes) : "?",
        // Writes refused at the node's caps; the reason is in --json and the aggregator's log.
        String(a.cappedWrites),
        err === undefined ? "" : `${ago(err.at, now)} ${err.text}`.trim(),
      ];
    }),
  );
}
