/**
 * A relay to the real engine's unix socket that a test can cut (the listener closed and every
 * open connection destroyed, so clients see the engine go away mid-request) and restore. It
 * listens on a unix socket path, or on loopback TCP when `path` is "tcp" (a stand-in for a
 * tcp:// builder; port 0 picks one, kept across a cut), with TLS and client certificates
 * required when `tls` is given (as a `dockerd --tlsverify` would).
 */
import { rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";

export class SocketRelay {
  private server: Server | undefined;
  private readonly open = new Set<Socket>();

  constructor(
    readonly path: string,
    private readonly target = "/var/run/docker.sock",
    private readonly tls?: { ca: Buffer | string; cert: Buffer | string; key: Buffer | string },
  ) {}

  private port = 0;

  get isUp(): boolean {
    return this.server !== undefined;
  }

  /** As a --builder spec names it: unix:///path or tcp://127.0.0.1:port. */
  get endpoint(): string {
    return this.path === "tcp" ? `tcp://127.0.0.1:${this.port}` : `unix://${this.path}`;
  }

  /** Listens on `path` (again, after a cut). */
  async up(): Promise<void> {
    if (this.server !== undefined) return;
    if (this.path !== "tcp") await rm(this.path, { force: true });
    const relay = (client: Socket) => {
      const upstream = connect(this.target);
      this.open.add(client).add(upstream);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.open.delete(client);
        this.open.delete(upstream);
      };
      client.pipe(upstream).pipe(client);
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    };
    const server = this.tls === undefined ? createServer(relay) : createTlsServer({ ...this.tls, requestCert: true, rejectUnauthorized: true }, relay);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      if (this.path === "tcp") server.listen(this.port, "127.0.0.1", () => resolve());
      else server.listen(this.path, () => resolve());
    });
    const addr = server.address();
    if (typeof addr === "object" && addr !== null) this.port = addr.port;
    this.server = server;
  }

  /** Cuts: no new connection is accepted and every open one is destroyed. */
  async down(): Promise<void> {
    for (const s of this.open) s.destroy();
    this.open.clear();
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((r) => server.close(() => r()));
  }
}
