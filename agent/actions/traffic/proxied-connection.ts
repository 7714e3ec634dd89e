/**
 * One client connection through the proxy: the accepted socket, and the backend socket it is
 * spliced to. Where it goes is the proxy's decision (tcp-proxy.ts); this file does the socket work:
 * dial, splice both ways with backpressure, half-close, tear down both on any error.
 *
 * Until the backend sends its first byte, the client's bytes are also kept (bounded) so that a
 * backend that resets before answering (its process stopped while the connection sat in its
 * listen backlog) can be replaced by a new dial that is sent the same bytes: the client never
 * sees that backend. A backend that closed cleanly, or that has spoken, is never retried.
 */
import { connect, type Socket } from "node:net";
import type { Backend } from "./traffic-redirect.js";

/** Both sockets probe an idle peer, so a vanished one does not pin its partner (and a drain) forever. */
const KEEPALIVE_MS = 60_000;

/** What the proxy hears from a connection. */
export interface ConnectionEvents {
  /** The backend failed before its first byte and the client's bytes can be replayed: dial again or refuse. */
  backendLost(conn: ProxiedConnection, reason: Error): void;
  /** Both sockets are closed (ended, failed, cut or refused). Called once. */
  closed(conn: ProxiedConnection): void;
}

export class ProxiedConnection {
  /** The backend this connection is dialling or spliced to (the proxy's accounting key). */
  backendId: string | undefined;
  /** When the current series of dials began (the retry budget counts from it). */
  dialSince: number | undefined;
  private backend: Socket | undefined;
  private connected = false;
  private backendSpoke = false;
  /** Client bytes sent before the backend's first byte; undefined once it spoke or the bound was passed. */
  private replay: Buffer[] | undefined = [];
  private replayBytes = 0;
  private clientEnded = false;
  private clientClosed = false;
  private done = false;

  constructor(
    readonly client: Socket,
    private readonly events: ConnectionEvents,
    private readonly replayLimit: number,
  ) {
    client.setNoDelay(true);
    client.setKeepAlive(true, KEEPALIVE_MS);
    client.on("error", () => this.destroy());
    client.on("data", (chunk: Buffer) => this.fromClient(chunk));
    client.on("end", () => {
      this.clientEnded = true;
      if (this.connected) this.backend?.end();
    });
    client.on("drain", () => this.backend?.resume());
    client.on("close", () => {
      this.clientClosed = true;
      // A client gone before its backend answered, or cut: nothing left to deliver to it.
      if (this.backend === undefined || !this.connected) this.destroy();
      this.settle();
    });
  }

  /** Dials `to` and splices on connect; the client stays paused until then. */
  dial(to: Backend, connectTimeoutMs: number): void {
    if (this.done) return;
    const sock = connect({ host: to.host, port: to.port, allowHalfOpen: true });
    this.backend = sock;
    this.connected = false;
    sock.setNoDelay(true);
    sock.setKeepAlive(true, KEEPALIVE_MS);
    sock.setTimeout(Math.max(1, connectTimeoutMs));
    sock.on("timeout", () => {
      if (sock === this.backend && !this.connected) sock.destroy(Object.assign(new Error(`connect to ${to.host}:${to.port} timed out`), { code: "ETIMEDOUT" }));
    });
    sock.on("connect", () => {
      if (sock !== this.backend) return;
      sock.setTimeout(0);
      this.connected = true;
      for (const chunk of this.replay ?? []) sock.write(chunk);
      if (this.clientEnded) sock.end();
      else this.client.resume();
    });
    sock.on("data", (chunk: Buffer) => {
      if (sock !== this.backend) return;
      if (!this.backendSpoke) {
        this.backendSpoke = true;
        this.replay = undefined;
      }
      if (!this.client.write(chunk)) sock.pause();
    });
    sock.on("drain", () => {
      if (sock === this.backend) this.client.resume();
    });
    sock.on("end", () => {
      if (sock !== this.backend) return;
      this.backendSpoke = true;
      this.replay = undefined;
      this.client.end();
    });
    sock.on("error", (err) => {
      if (sock !== this.backend || this.done) return;
      if (!this.backendSpoke && this.replay !== undefined && !this.clientClosed) {
        this.backend = undefined;
        this.connected = false;
        this.client.pause();
        sock.destroy();
        this.events.backendLost(this, err);
        return;
      }
      this.destroy();
    });
    sock.on("close", () => {
      if (sock === this.backend) this.settle();
    });
  }

  /** Parks the client while it waits for a backend (not read, not refused). */
  park(): void {
    this.client.pause();
  }

  /** Closes both sockets now (refused, cut, or one side failed). */
  destroy(): void {
    this.client.destroy();
    this.backend?.destroy();
  }

  private fromClient(chunk: Buffer): void {
    if (this.replay !== undefined) {
      this.replayBytes += chunk.length;
      if (this.replayBytes <= this.replayLimit) this.replay.push(chunk);
      else this.replay = undefined;
    }
    if (this.connected && this.backend !== undefined) {
      if (!this.backend.write(chunk)) this.client.pause();
    } else if (this.replay === undefined) {
      // Read with no backend to give it to and no room to keep it: the bytes cannot be delivered.
      this.destroy();
    } else {
      this.client.pause();
    }
  }

  private settle(): void {
    if (this.done || !this.clientClosed) return;
    if (this.backend !== undefined && !this.backend.destroyed) return;
    this.done = true;
    this.events.closed(this);
  }
}
