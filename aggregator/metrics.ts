import { Counter, Gauge, Registry } from "prom-client";

/** The aggregator's own Prometheus metrics, on a registry of its own. */
export class AggregatorMetrics {
  readonly registry = new Registry();
  readonly agentsConnected = new Gauge({ name: "shadowlayer_aggregator_agents_connected", help: "Agents with an open stream", registers: [this.registry] });
  readonly graphs = new Gauge({ name: "shadowlayer_aggregator_graphs", help: "Layer graphs stored", registers: [this.registry] });
  readonly messages = new Counter({ name: "shadowlayer_aggregator_agent_messages_total", help: "Messages received from agents", labelNames: ["kind"], registers: [this.registry] });
  readonly rejected = new Counter({ name: "shadowlayer_aggregator_rejected_total", help: "Streams or requests refused", labelNames: ["reason"], registers: [this.registry] });
  readonly watchers = new Gauge({ name: "shadowlayer_aggregator_watchers", help: "Open watch streams (graphs, telemetry, scores)", registers: [this.registry] });
  readonly watchQueuedBytes = new Gauge({ name: "shadowlayer_aggregator_watch_queued_bytes", help: "Bytes written to watch streams and not yet taken by their connections", registers: [this.registry] });
  readonly watchDropped = new Counter({
    name: "shadowlayer_aggregator_watch_dropped_events_total",
    help: "Watch events dropped because the stream's client did not read (it is resynced)",
    labelNames: ["stream"],
    registers: [this.registry],
  });
  readonly watchResyncs = new Counter({ name: "shadowlayer_aggregator_watch_resyncs_total", help: "Snapshots sent again to watch streams that fell behind", labelNames: ["stream"], registers: [this.registry] });
  readonly cappedWrites = new Counter({
    name: "shadowlayer_aggregator_capped_writes_total",
    help: "Agent writes refused because their node reached a cap (containers, graph bytes)",
    labelNames: ["cap"],
    registers: [this.registry],
  });
  readonly refusedWrites = new Counter({
    name: "shadowlayer_aggregator_refused_writes_total",
    help: "Agent writes about a container of another node, refused (acked, not stored)",
    labelNames: ["kind"],
    registers: [this.registry],
  });
  readonly storeFailing = new Gauge({
    name: "shadowlayer_aggregator_store_failing",
    help: "1 while the store cannot write (disk full or failing): writes refused, reads served; 0 once it recovers",
    registers: [this.registry],
  });
  readonly telemetry = new Counter({
    name: "shadowlayer_aggregator_telemetry_items_total",
    help: "Telemetry items from agents, stored or dropped as repeats",
    labelNames: ["kind", "outcome"],
    registers: [this.registry],
  });
  readonly switchoverRequests = new Counter({
    name: "shadowlayer_aggregator_switchover_requests_total",
    help: "Switchover and rollback requests by trigger and what became of them (sent, waiting, refused, failed)",
    labelNames: ["trigger", "result"],
    registers: [this.registry],
  });
  readonly switchoverTriggers = new Counter({
    name: "shadowlayer_aggregator_switchover_triggers_total",
    help: "Automatic triggers (proactive risk, drift) that asked for a switchover, or were skipped and why",
    labelNames: ["trigger", "decision"],
    registers: [this.registry],
  });
}
