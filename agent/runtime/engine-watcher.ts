/**
 * Follows the engine's container events so a start, stop or removal is reflected at once, and
 * refreshes everything on a timer for process changes inside containers. When the event stream
 * breaks (the engine restarted), it reconnects with backoff and resyncs in full.
 */
import type Docker from "dockerode";
import type { Logger } from "../../common/log.js";
import { Backoff } from "../../common/backoff.js";
import type { LdgCollector } from "../layers/ldg-collector.js";
import type { AgentMetrics } from "../metrics.js";

export interface EngineWatcherOptions {
  docker: Docker;
  /** Client for the long-lived event stream (no request timeout); `docker` when absent. */
  events?: Docker;
  collector: LdgCollector;
  log: Logger;
  metrics: AgentMetrics;
  /** Full refresh period (process changes inside containers). */
  refreshMs: number;
}

interface EngineEvent {
  Type?: unknown;
  Action?: unknown;
  Actor?: { ID?: unknown };
}

export class EngineWatcher {
  private stream: NodeJS.ReadableStream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private readonly backoff = new Backoff(250, 5000);
  private stopped = false;
  private engineDown = false;

  constructor(private readonly o: EngineWatcherOptions) {}

  async start(): Promise<void> {
    await this.subscribe();
    await this.o.collector.refreshAll();
    this.timer = setInterval(() => this.periodic(), this.o.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    const s = this.stream as (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
    s?.destroy?.();
    this.stream = undefined;
  }

  private periodicCount = 0;

  /**
   * Every period: re-checks the processes of the containers already known (cheap: one cgroup
   * read per idle container). Every fifth: lists the engine's containers too, a safety net under
   * the event stream, which already reports every create, start, stop and destroy.
   */
  private periodic(): void {
    if (this.engineDown) return;
    const list = this.periodicCount++ % 5 === 0;
    (list ? this.o.collector.refreshAll() : this.o.collector.refreshKnown()).catch((err: unknown) => {
      this.o.metrics.errors.inc({ stage: "refresh" });
      this.o.log.warn({ err: String(err) }, "periodic refresh failed");
    });
  }

  private async subscribe(): Promise<void> {
    const stream = (await (this.o.events ?? this.o.docker).getEvents({ filters: { type: ["container"] } })) as NodeJS.ReadableStream;
    this.stream = stream;
    let pending = "";
    stream.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.trim() !== "") this.onLine(line);
      }
    });
    const lost = (why: string) => {
      if (this.stream !== stream || this.stopped) return;
      this.stream = undefined;
      this.engineDown = true;
      this.o.log.warn({ why }, "engine event stream lost; reconnecting");
      this.scheduleResubscribe();
    };
    stream.on("end", () => lost("end"));
    stream.on("error", (err: Error) => lost(err.message));
  }

  private scheduleResubscribe(): void {
    if (this.stopped) return;
    this.retry = setTimeout(() => {
      this.subscribe()
        .then(async () => {
          this.backoff.reset();
          this.engineDown = false;
          this.o.log.info("engine event stream back; full resync");
          // The engine may have restarted: nothing cached about containers can be trusted.
          this.o.collector.clearCaches();
          await this.o.collector.refreshAll();
        })
        .catch(() => this.scheduleResubscribe());
    }, this.backoff.next());
    this.retry.unref();
  }

  private onLine(line: string): void {
    let ev: EngineEvent;
    try {
      ev = JSON.parse(line) as EngineEvent;
    } catch {
      this.o.metrics.errors.inc({ stage: "event-parse" });
      return;
    }
    if (ev.Type !== "container" || typeof ev.Action !== "string" || typeof ev.Actor?.ID !== "string") return;
    const id = ev.Actor.ID;
    // "exec_start: sh -c …" carries the command after the colon.
    const action = ev.Action.split(":")[0] ?? ev.Action;
    this.o.metrics.engineEvents.inc({ action });
    const done = (p: Promise<void>) =>
      p.catch((err: unknown) => {
        this.o.metrics.errors.inc({ stage: "event" });
        this.o.log.warn({ container: id, action, err: String(err) }, "refresh after event failed");
      });
    if (action === "destroy") done(this.o.collector.remove(id));
    else if (action === "exec_die" || action === "exec_create" || action === "attach" || action === "resize" || action === "top") return;
    else done(this.o.collector.refreshOne(id));
  }
}
