/**
 * The agent's L4 proxy: one TCP listener per managed service on its stable address, each accepted
 * connection spliced to the service's current backend. Built on node:net alone because it sits in
 * every request's path: per connection it costs two sockets and a few closures, nothing parses
 * the bytes, and no framework stands between the kernel and the splice.
 *
 * Why each behaviour is what it is:
 * - The backend is one field, swapped in one assignment: a connection is dispatched with the
 *   backend it read at that moment, never a half-set one; connections already forwarded keep
 *   their backend until they end, and are counted per backend so a switchover can drain them.
 * - A held connection is accepted and left unread (the listener pauses on connect), so the client
 *   sees a slow server, not a refusal; the hold is bounded in number and time so that a switchover
 *   that never completes cannot pile up sockets forever.
 * - A backend just started may not listen yet: a dial that fails before the backend's first byte
 *   is retried a few ms apart, each time with the backend current then, so a swap made during the
 *   retries is followed (proxied-connection.ts keeps the client's bytes for the new dial).
 */
import { createServer, type Server } from "node:net";
import { Code, ShadowError, errnoCode } from "../../../common/errors.js";
import { splitHostPort } from "../../../common/listen-address.js";
import type { Logger } from "../../../common/log.js";
import { ProxiedConnection, type ConnectionEvents } from "./proxied-connection.js";
import type { Backend, DrainResult, ServiceTrafficStats, TrafficRedirect } from "./traffic-redirect.js";

export interface TcpProxyOptions {
  /** Connections waiting at once per service (held, or with no backend yet); past it a new one is refused. Default 1024. */
  maxHeld?: number;
  /** How long one connection may wait in a hold before it is closed (refused). Default 10 s. */
  holdMs?: number;
  /** How long dials that fail before the backend's first byte are retried before the client is closed (refused). Default 3 s. */
  connectRetryMs?: number;
  /** Pause between two such dials. Default 10 ms. */
  retryDelayMs?: number;
  /** Client bytes kept per connection until its backend first answers, to send again on a retried dial; past it no retry. Default 64 KiB. */
  replayBytes?: number;
  /** Swaps, holds, drains and listener failures are logged (never a line per connection). */
  log?: Logger;
}

interface DrainWait {
  backendId: string;
  drained: number;
  finish(): void;
}

/** One service's listener and the connections it accepted. */
interface ServiceEntry {
  readonly name: string;
  readonly listen: string;
  readonly host: string;
  readonly port: number;
  readonly server: Server;
  /** Settles when the listener is bound (or failed to bind). */
  ready: Promise<void>;
  backend: Backend | undefined;
  holding: boolean;
  /** Waiting connections in arrival order, each with its hold timer. */
  readonly held: Map<ProxiedConnection, NodeJS.Timeout>;
  /** Connections dialling or spliced to a backend, per backend id. */
  readonly open: Map<string, Set<ProxiedConnection>>;
  /** Every connection not yet closed (held, dialling, retrying, spliced). */
  readonly live: Set<ProxiedConnection>;
  readonly drains: Set<DrainWait>;
  accepted: number;
  refused: number;
  cut: number;
  closed: boolean;
}

export class TcpProxy implements TrafficRedirect {
  readonly kind = "proxy";
  private readonly services = new Map<string, ServiceEntry>();
  private readonly maxHeld: number;
  private readonly holdMs: number;
  private readonly connectRetryMs: number;
  private readonly retryDelayMs: number;
  private readonly replayBytes: number;
  private readonly log: Logger | undefined;

  constructor(options: TcpProxyOptions = {}) {
    this.maxHeld = options.maxHeld ?? 1024;
    this.holdMs = options.holdMs ?? 10_000;
    this.connectRetryMs = options.connectRetryMs ?? 3_000;
    this.retryDelayMs = options.retryDelayMs ?? 10;
    this.replayBytes = options.replayBytes ?? 64 * 1024;
    this.log = options.log;
  }

  /**
   * Called again for a known service: a different backend is a swap (it ends a hold); the same
   * backend, or none, changes nothing, so a caller that only wants the listener up cannot end a hold.
   */
  async ensure(service: string, listen: string, backend: Backend | undefined): Promise<void> {
    const { host, port } = splitHostPort(listen);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new ShadowError(Code.InvalidArgument, `service ${service}: listen address ${listen} is not host:port`);
    }
    if (backend !== undefined) checkBackend(service, backend);
    let entry = this.services.get(service);
    if (entry !== undefined && (entry.host !== host || entry.port !== port)) {
      throw new ShadowError(Code.FailedPrecondition, `service ${service} is served on ${entry.listen}, not ${listen}: remove it first`);
    }
    if (entry === undefined) {
      entry = this.listenFor(service, listen, host, port, backend);
      this.services.set(service, entry);
    } else if (backend !== undefined && !sameBackend(entry.backend, backend)) {
      this.swapEntry(entry, backend);
    }
    await entry.ready;
  }

  hold(service: string): void {
    const entry = this.entry(service);
    if (entry.holding) return;
    entry.holding = true;
    this.log?.info({ service, listen: entry.listen }, "holding new connections");
  }

  swap(service: string, to: Backend): Backend | undefined {
    const entry = this.entry(service);
    checkBackend(service, to);
    return this.swapEntry(entry, to);
  }

  drain(service: string, backendId: string, deadlineMs: number): Promise<DrainResult> {
    const entry = this.entry(service);
    const started = Date.now();
    if ((entry.open.get(backendId)?.size ?? 0) === 0) return Promise.resolve({ drained: 0, cut: 0, waitedMs: 0 });
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const wait: DrainWait = {
        backendId,
        drained: 0,
        finish: () => {
          clearTimeout(timer);
          entry.drains.delete(wait);
          const cut = this.cutBackend(entry, backendId);
          const result = { drained: wait.drained, cut, waitedMs: Date.now() - started };
          this.log?.info({ service, backend: backendId, ...result }, "drained");
          resolve(result);
        },
      };
      entry.drains.add(wait);
      timer = setTimeout(() => wait.finish(), Math.max(0, deadlineMs));
    });
  }

  backend(service: string): Backend | undefined {
    const b = this.services.get(service)?.backend;
    return b === undefined ? undefined : { ...b };
  }

  stats(): ServiceTrafficStats[] {
    return [...this.services.values()].map((e) => {
      const open: Record<string, number> = {};
      if (e.backend !== undefined) open[e.backend.id] = 0;
      for (const [id, set] of e.open) open[id] = set.size;
      return {
        service: e.name,
        listen: e.listen,
        backend: e.backend === undefined ? undefined : { ...e.backend },
        holding: e.holding,
        open,
        accepted: e.accepted,
        held: e.held.size,
        refused: e.refused,
        cut: e.cut,
      };
    });
  }

  async remove(service: string): Promise<void> {
    const entry = this.services.get(service);
    if (entry === undefined) return;
    this.services.delete(service);
    entry.closed = true;
    for (const conn of [...entry.held.keys()]) this.refuse(entry, conn);
    await closeListener(entry);
    this.log?.info({ service, listen: entry.listen }, "service removed");
  }

  async close(): Promise<void> {
    const entries = [...this.services.values()];
    this.services.clear();
    await Promise.all(
      entries.map(async (entry) => {
        entry.closed = true;
        for (const conn of [...entry.held.keys()]) this.refuse(entry, conn);
        for (const wait of [...entry.drains]) wait.finish();
        for (const conn of [...entry.live]) conn.destroy();
        await closeListener(entry);
      }),
    );
  }

  private entry(service: string): ServiceEntry {
    const entry = this.services.get(service);
    if (entry === undefined) throw new ShadowError(Code.NotFound, `no proxied service ${service}`);
    return entry;
  }

  private listenFor(name: string, listen: string, host: string, port: number, backend: Backend | undefined): ServiceEntry {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
    const entry: ServiceEntry = {
      name,
      listen,
      host,
      port,
      server,
      ready: Promise.resolve(),
      backend: backend === undefined ? undefined : { ...backend },
      holding: false,
      held: new Map(),
      open: new Map(),
      live: new Set(),
      drains: new Set(),
      accepted: 0,
      refused: 0,
      cut: 0,
      closed: false,
    };
    const events = this.eventsFor(entry);
    server.on("connection", (socket) => {
      entry.accepted++;
      const conn = new ProxiedConnection(socket, events, this.replayBytes);
      entry.live.add(conn);
      this.dispatch(entry, conn);
    });
    entry.ready = new Promise<void>((resolve, reject) => {
      const failed = (err: Error) => {
        if (this.services.get(name) === entry) this.services.delete(name);
        entry.closed = true;
        const why = errnoCode(err) === "EADDRINUSE" ? "address in use" : err.message;
        reject(new ShadowError(Code.FailedPrecondition, `service ${name}: cannot listen on ${listen}: ${why}`, { cause: err }));
      };
      server.once("error", failed);
      server.listen({ host, port }, () => {
        server.off("error", failed);
        server.on("error", (err) => this.log?.error({ service: name, listen, err }, "proxy listener failed"));
        this.log?.info({ service: name, listen, backend: entry.backend?.id }, "proxy listening");
        resolve();
      });
    });
    return entry;
  }

  private eventsFor(entry: ServiceEntry): ConnectionEvents {
    return {
      backendLost: (conn, reason) => {
        this.release(entry, conn);
        const since = conn.dialSince ?? Date.now();
        if (entry.closed || Date.now() - since >= this.connectRetryMs) {
          this.log?.debug({ service: entry.name, err: reason.message }, "backend unreachable, connection refused");
          this.refuse(entry, conn);
          return;
        }
        setTimeout(() => this.dispatch(entry, conn), this.retryDelayMs);
      },
      closed: (conn) => {
        entry.live.delete(conn);
        const timer = entry.held.get(conn);
        if (timer !== undefined) {
          clearTimeout(timer);
          entry.held.delete(conn);
        }
        if (this.release(entry, conn) !== undefined) {
          for (const wait of entry.drains) if (wait.backendId === conn.backendId) wait.drained++;
        }
        conn.backendId = undefined;
      },
    };
  }

  /** Sends a connection to the current backend, or into the hold when there is none to send it to. */
  private dispatch(entry: ServiceEntry, conn: ProxiedConnection): void {
    if (entry.closed) {
      conn.destroy();
      return;
    }
    if (!entry.live.has(conn)) return;
    const to = entry.holding ? undefined : entry.backend;
    if (to === undefined) {
      this.park(entry, conn);
      return;
    }
    conn.dialSince ??= Date.now();
    conn.backendId = to.id;
    let set = entry.open.get(to.id);
    if (set === undefined) entry.open.set(to.id, (set = new Set()));
    set.add(conn);
    conn.dial(to, this.connectRetryMs - (Date.now() - conn.dialSince));
  }

  private park(entry: ServiceEntry, conn: ProxiedConnection): void {
    if (entry.held.size >= this.maxHeld) {
      this.refuse(entry, conn);
      return;
    }
    conn.park();
    conn.dialSince = undefined;
    const timer = setTimeout(() => {
      entry.held.delete(conn);
      this.refuse(entry, conn);
    }, this.holdMs);
    entry.held.set(conn, timer);
  }

  private refuse(entry: ServiceEntry, conn: ProxiedConnection): void {
    const timer = entry.held.get(conn);
    if (timer !== undefined) {
      clearTimeout(timer);
      entry.held.delete(conn);
    }
    entry.refused++;
    conn.destroy();
  }

  /** Takes a connection off its backend's count; returns the backend id it was counted on, if any. */
  private release(entry: ServiceEntry, conn: ProxiedConnection): string | undefined {
    const id = conn.backendId;
    if (id === undefined) return undefined;
    const set = entry.open.get(id);
    if (set?.delete(conn) !== true) return undefined;
    if (set.size === 0) {
      entry.open.delete(id);
      for (const wait of [...entry.drains]) if (wait.backendId === id) queueMicrotask(() => entry.drains.has(wait) && wait.finish());
    }
    return id;
  }

  private swapEntry(entry: ServiceEntry, to: Backend): Backend | undefined {
    const previous = entry.backend;
    entry.backend = { ...to };
    entry.holding = false;
    const waiting = [...entry.held];
    entry.held.clear();
    this.log?.info({ service: entry.name, from: previous?.id, to: to.id, held: waiting.length }, "backend swapped");
    for (const [conn, timer] of waiting) {
      clearTimeout(timer);
      this.dispatch(entry, conn);
    }
    return previous;
  }

  /** Closes the connections still open to a backend (a drain's deadline); returns how many. */
  private cutBackend(entry: ServiceEntry, backendId: string): number {
    const set = entry.open.get(backendId);
    if (set === undefined || set.size === 0) return 0;
    const conns = [...set];
    entry.open.delete(backendId);
    for (const conn of conns) {
      conn.backendId = undefined;
      conn.destroy();
    }
    entry.cut += conns.length;
    return conns.length;
  }
}

/** A backend a dial can take: checked before it is set, since a dial cannot report it to anyone. */
function checkBackend(service: string, b: Backend): void {
  if (b.host === "" || !Number.isInteger(b.port) || b.port < 1 || b.port > 65535 || b.id === "") {
    throw new ShadowError(Code.InvalidArgument, `service ${service}: backend ${b.id || "(no id)"} at ${b.host}:${b.port} is not a host, a port and an id`);
  }
}

function sameBackend(a: Backend | undefined, b: Backend): boolean {
  return a !== undefined && a.id === b.id && a.host === b.host && a.port === b.port;
}

/**
 * Stops accepting; resolves once the port is released (open connections are not waited for). A
 * listener still binding is waited for first, so that it cannot outlive its removal.
 */
async function closeListener(entry: ServiceEntry): Promise<void> {
  await entry.ready.catch(() => undefined);
  if (!entry.server.listening) return;
  entry.server.close();
  await new Promise((resolve) => setImmediate(resolve));
}
