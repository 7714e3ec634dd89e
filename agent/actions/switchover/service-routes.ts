/**
 * Keeps each managed service's stable address forwarding to the container that serves it: at
 * start (after recovery) and on engine changes, every container labelled with a service address
 * is found, and the proxy listens there with the running one as backend. A service a switchover
 * or rollback is working on is left to it.
 */
import type Docker from "dockerode";
import type { Logger } from "../../../common/log.js";
import { SHADOW_CONTAINER_LABELS } from "../shadow-containers.js";
import type { Backend, TrafficRedirect } from "../traffic/traffic-redirect.js";
import { managedService } from "./managed-service.js";
import { SERVICE_LABELS } from "./service-labels.js";

/** How soon a service skipped because a switchover was working on it is looked at again. */
const RETRY_BUSY_MS = 1000;

export class ServiceRoutes {
  private pending: Promise<void> | undefined;
  private again = false;
  /** The stable addresses the proxy serves for this agent's services. */
  private readonly served = new Set<string>();
  /** A pass again soon, for services a switchover was working on (no engine event may follow). */
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly docker: Docker,
    private readonly proxy: TrafficRedirect,
    private readonly busy: (key: string) => boolean,
    private readonly log: Logger,
    /** Only these containers' services (a test host leaves everyone else's alone); default all. */
    private readonly only: (labels: Record<string, string>) => boolean = () => true,
  ) {}

  /** Brings every service's route up to date; calls during a pass cause one more pass. Never rejects. */
  refresh(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.pending !== undefined) {
      this.again = true;
      return this.pending;
    }
    this.pending = (async () => {
      do {
        this.again = false;
        await this.pass().catch((err: unknown) => this.log.warn({ err: String(err) }, "cannot update the service routes"));
      } while (this.again);
    })().finally(() => (this.pending = undefined));
    return this.pending;
  }

  /** No pass after this (the proxy is closing). */
  close(): void {
    this.closed = true;
    if (this.retry !== undefined) clearTimeout(this.retry);
  }

  private async pass(): Promise<void> {
    const list = await this.docker.listContainers({ all: true, filters: { label: [SERVICE_LABELS.address] } });
    const byAddress = new Map<string, Docker.ContainerInfo[]>();
    for (const c of list) {
      const s = managedService(c.Labels);
      if (s === undefined || !this.only(c.Labels)) continue;
      byAddress.set(s.address, [...(byAddress.get(s.address) ?? []), c]);
    }
    let deferred = false;
    for (const [address, cs] of byAddress) {
      if (this.busy(address)) {
        deferred = true;
        continue;
      }
      // Two running (a switchover's overlap): the shadow, the newer of the two, is the one that serves.
      const running = cs.filter((c) => c.State === "running").sort((a, b) => Number(b.Labels[SHADOW_CONTAINER_LABELS.shadowOf] !== undefined) - Number(a.Labels[SHADOW_CONTAINER_LABELS.shadowOf] !== undefined) || b.Created - a.Created);
      const serving = running[0];
      const backend = serving === undefined ? undefined : backendOf(serving);
      try {
        await this.proxy.ensure(address, address, backend);
        this.served.add(address);
      } catch (err) {
        this.log.warn({ service: address, err: String(err) }, "cannot serve the service's stable address");
      }
    }
    // A service whose containers are all gone: its address stops being served (rather than holding clients for nothing).
    for (const address of this.served) {
      if (byAddress.has(address)) continue;
      if (this.busy(address)) {
        deferred = true;
        continue;
      }
      this.served.delete(address);
      await this.proxy.remove(address).catch((err: unknown) => this.log.warn({ service: address, err: String(err) }, "cannot stop serving a removed service's address"));
      this.log.info({ service: address }, "service removed: its stable address is no longer served");
    }
    if (deferred && this.retry === undefined && !this.closed) {
      this.retry = setTimeout(() => {
        this.retry = undefined;
        void this.refresh();
      }, RETRY_BUSY_MS);
      this.retry.unref();
    }
  }
}

function backendOf(c: Docker.ContainerInfo): Backend | undefined {
  const s = managedService(c.Labels);
  if (s === undefined) return undefined;
  const host = c.HostConfig.NetworkMode === "host" ? "127.0.0.1" : (Object.values(c.NetworkSettings.Networks).find((n) => n.IPAddress !== "")?.IPAddress ?? "127.0.0.1");
  return { host, port: s.port, id: c.Id };
}
