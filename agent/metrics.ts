import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** The agent's own Prometheus metrics, on a registry of its own. */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly containers = new Gauge({ name: "shadowlayer_agent_containers", help: "Containers the agent tracks", registers: [this.registry] });
  readonly graphBuilds = new Counter({ name: "shadowlayer_agent_graph_builds_total", help: "Layer graphs built", registers: [this.registry] });
  readonly graphBuildSeconds = new Histogram({
    name: "shadowlayer_agent_graph_build_seconds",
    help: "Time to build one container's layer graph",
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.03, 0.1, 0.3, 1],
    registers: [this.registry],
  });
  readonly vanished = new Counter({
    name: "shadowlayer_agent_vanished_total",
    help: "Containers or processes that disappeared while being read",
    labelNames: ["what"],
    registers: [this.registry],
  });
  readonly errors = new Counter({ name: "shadowlayer_agent_errors_total", help: "Errors by stage", labelNames: ["stage"], registers: [this.registry] });
  readonly engineEvents = new Counter({ name: "shadowlayer_agent_engine_events_total", help: "Engine events received", labelNames: ["action"], registers: [this.registry] });
  readonly linkConnected = new Gauge({ name: "shadowlayer_agent_link_connected", help: "1 while the stream to the aggregator is up", registers: [this.registry] });
  readonly linkReconnects = new Counter({ name: "shadowlayer_agent_link_reconnects_total", help: "Connection attempts to the aggregator after the first", registers: [this.registry] });
  readonly messagesSent = new Counter({ name: "shadowlayer_agent_messages_sent_total", help: "Messages sent to the aggregator", labelNames: ["kind"], registers: [this.registry] });
  readonly linkTruncated = new Counter({
    name: "shadowlayer_agent_messages_truncated_total",
    help: "Messages sent with container-provided values cut to the caps",
    labelNames: ["kind"],
    registers: [this.registry],
  });
  readonly linkDroppedOversize = new Counter({
    name: "shadowlayer_agent_messages_dropped_oversize_total",
    help: "Messages dropped because they exceed the message limit even after capping",
    labelNames: ["kind"],
    registers: [this.registry],
  });
  readonly commands = new Counter({ name: "shadowlayer_agent_commands_total", help: "Commands received, by result", labelNames: ["result"], registers: [this.registry] });
  readonly execSource = new Gauge({ name: "shadowlayer_agent_exec_source", help: "1 for the active exec-event source", labelNames: ["source"], registers: [this.registry] });
  readonly execEvents = new Counter({ name: "shadowlayer_agent_exec_events_total", help: "Exec events mapped to a container", labelNames: ["source"], registers: [this.registry] });
  readonly execEventsLost = new Counter({ name: "shadowlayer_agent_exec_events_lost_total", help: "Exec events the kernel dropped (bpftrace lost_events)", registers: [this.registry] });
  readonly detections = new Counter({ name: "shadowlayer_agent_detections_total", help: "Runtime detections", labelNames: ["rule", "reason"], registers: [this.registry] });
  readonly samplePasses = new Counter({ name: "shadowlayer_agent_sample_passes_total", help: "Telemetry sampling passes", registers: [this.registry] });
  readonly samplePassSeconds = new Histogram({
    name: "shadowlayer_agent_sample_pass_seconds",
    help: "Wall time of one telemetry sampling pass",
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3],
    registers: [this.registry],
  });
  readonly windows = new Counter({ name: "shadowlayer_agent_windows_total", help: "Window summaries produced", registers: [this.registry] });
  readonly exitsCharged = new Counter({ name: "shadowlayer_agent_exits_charged_total", help: "Processes charged to a layer at exit (kernel exit events)", registers: [this.registry] });
  readonly cpuAttributedShare = new Histogram({
    name: "shadowlayer_agent_cpu_attributed_share",
    help: "Per container window, the share of the cgroup's CPU time that reached a layer",
    buckets: [0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1],
    registers: [this.registry],
  });
  readonly spoolPending = new Gauge({ name: "shadowlayer_agent_spool_pending", help: "Telemetry items waiting in the spool", registers: [this.registry] });
  readonly spoolDropped = new Counter({ name: "shadowlayer_agent_spool_dropped_total", help: "Oldest telemetry items dropped because the spool was full", registers: [this.registry] });
  readonly spoolFailed = new Counter({
    name: "shadowlayer_agent_spool_failed_total",
    help: "Telemetry items that could not be spooled (the state database could not write: disk full or failing)",
    registers: [this.registry],
  });
  readonly switchovers = new Counter({
    name: "shadowlayer_agent_switchovers_total",
    help: "Switchovers and rollbacks finished, by kind and outcome",
    labelNames: ["kind", "outcome"],
    registers: [this.registry],
  });
  /** Read at each scrape from the traffic proxy (set by the agent). */
  proxyStats: () => Array<{ accepted: number; held: number; refused: number; cut: number }> = () => [];
  readonly proxyConnections = new Gauge({
    name: "shadowlayer_agent_proxy_connections",
    help: "The service proxy's connections over all services: accepted, held (now), refused, cut",
    labelNames: ["what"],
    registers: [this.registry],
    collect: () => {
      const sum = { accepted: 0, held: 0, refused: 0, cut: 0 };
      for (const s of this.proxyStats()) for (const k of Object.keys(sum) as Array<keyof typeof sum>) sum[k] += s[k];
      for (const [k, v] of Object.entries(sum)) this.proxyConnections.set({ what: k }, v);
    },
  });
}
