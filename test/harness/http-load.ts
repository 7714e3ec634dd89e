/**
 * A bounded loopback HTTP load: `concurrency` loops each send one GET at a time, every request on
 * a new connection (so each one goes through the proxy's dispatch), until stopped or the count or
 * time bound is reached. Every request's outcome is kept: status, body (a test service answers
 * with who served it), error, and times; `maxGapMs` is the longest time no request completed.
 */
import { request } from "node:http";

export interface LoadResult {
  ok: boolean;
  status: number;
  body: string;
  error: string;
  startedAt: number;
  endedAt: number;
}

export interface LoadOptions {
  host: string;
  port: number;
  /** A fixed path, or one per request (numbered from 1). */
  path?: string | ((n: number) => string);
  concurrency?: number;
  /** Bounds: whichever comes first (defaults 20,000 requests, 60 s). */
  maxRequests?: number;
  maxMs?: number;
  timeoutMs?: number;
}

export function getOnce(host: string, port: number, path = "/", timeoutMs = 5000): Promise<LoadResult> {
  const startedAt = performance.now();
  return new Promise((resolve) => {
    const finish = (r: Omit<LoadResult, "startedAt" | "endedAt">) => resolve({ ...r, startedAt, endedAt: performance.now() });
    const req = request({ host, port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => finish({ ok: (res.statusCode ?? 0) === 200, status: res.statusCode ?? 0, body: body.trim(), error: "" }));
      res.on("error", (e) => finish({ ok: false, status: res.statusCode ?? 0, body, error: e.message }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => finish({ ok: false, status: 0, body: "", error: e.message }));
    req.end();
  });
}

export class HttpLoad {
  readonly results: Array<LoadResult & { path: string }> = [];
  private stopped = false;
  private sent = 0;
  private readonly loops: Array<Promise<void>> = [];
  private readonly started = performance.now();

  constructor(o: LoadOptions) {
    const max = o.maxRequests ?? 20_000;
    const until = this.started + (o.maxMs ?? 60_000);
    for (let i = 0; i < (o.concurrency ?? 4); i++) {
      this.loops.push(
        (async () => {
          while (!this.stopped && this.sent < max && performance.now() < until) {
            const n = ++this.sent;
            const path = typeof o.path === "function" ? o.path(n) : o.path;
            this.results.push({ ...(await getOnce(o.host, o.port, path, o.timeoutMs)), path: path ?? "/" });
          }
        })(),
      );
    }
  }

  /** Stops sending and waits for the requests in flight. */
  async stop(): Promise<Array<LoadResult & { path: string }>> {
    this.stopped = true;
    await Promise.all(this.loops);
    return this.results;
  }

  get failed(): Array<LoadResult & { path: string }> {
    return this.results.filter((r) => !r.ok);
  }

  /** The longest time in which no request completed (from the load's start). */
  maxGapMs(): number {
    const ends = this.results.map((r) => r.endedAt).sort((a, b) => a - b);
    let gap = 0;
    let prev = this.started;
    for (const e of ends) {
      gap = Math.max(gap, e - prev);
      prev = e;
    }
    return gap;
  }
}
