/**
 * Follows the runtime's container events (Docker's /events, containerd's event service) so a
 * start, stop or removal is reflected at once, and refreshes everything on a timer for process
 * changes inside containers. When the event stream breaks (the runtime restarted), it reconnects
 * with backoff and resyncs in full.
 */
import type { Logger } from "../../common/log.js";
import { Backoff } from "../../common/backoff.js";
import type { LdgCollector } from "../layers/ldg-collector.js";
import type { AgentMetrics } from "../metrics.js";
import type { ContainerRuntime, RuntimeEvent, RuntimeSubscription } from "./runtime.js";

export interface EngineWatcherOptions {
  runtime: ContainerRuntime;
  collector: LdgCollector;
  log: Logger;
  metrics: AgentMetrics;
  /** Full refresh period (process changes inside containers). */
  refreshMs: number;
}

export class EngineWatcher {
  private sub: RuntimeSubscription | undefined;
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
    this.sub?.close();
    this.sub = undefined;
  }

  private periodicCount = 0;

  /**
   * Every period: re-checks the processes of the containers already known (cheap: one cgroup
   * read per idle container). Every fifth: lists the runtime's containers too, a safety net under
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
    let mine: RuntimeSubscription | undefined;
    const sub = await this.o.runtime.subscribe({
      event: (e) => this.onEvent(e),
      lost: (why) => {
        if (this.stopped || (mine !== undefined && this.sub !== mine)) return;
        this.sub = undefined;
        this.engineDown = true;
        this.o.log.warn({ why, runtime: this.o.runtime.info.kind }, "runtime event stream lost; reconnecting");
        this.scheduleResubscribe();
      },
    });
    mine = sub;
    this.sub = sub;
  }

  private scheduleResubscribe(): void {
    if (this.stopped) return;
    this.retry = setTimeout(() => {
      this.subscribe()
        .then(async () => {
          this.backoff.reset();
          this.engineDown = false;
          this.o.log.info("runtime event stream back; full resync");
          // The runtime may have restarted: nothing cached about containers can be trusted.
          this.o.collector.clearCaches();
          await this.o.collector.refreshAll();
        })
        .catch(() => this.scheduleResubscribe());
    }, this.backoff.next());
    this.retry.unref();
  }

  private onEvent(e: RuntimeEvent): void {
    if (e.change === "unparsable") {
      this.o.metrics.errors.inc({ stage: "event-parse" });
      return;
    }
    this.o.metrics.engineEvents.inc({ action: e.action });
    if (e.change === "ignored") return;
    const id = e.id;
    const done = (p: Promise<void>) =>
      p.catch((err: unknown) => {
        this.o.metrics.errors.inc({ stage: "event" });
        this.o.log.warn({ container: id, action: e.action, err: String(err) }, "refresh after event failed");
      });
    if (e.change === "removed") done(this.o.collector.remove(id));
    else done(this.o.collector.refreshOne(id));
  }
}
