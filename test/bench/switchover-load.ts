/**
 * The load a replacement is measured under: a few HTTP clients on loopback, each one request per
 * fresh connection (HTTP/1.0, no keep-alive, so every request is a new accept at the address),
 * paced, bounded in count and time. Every request's start, end, outcome and body is recorded; the
 * body is the token the serving start wrote, so a response says which start served it.
 */
import { connect } from "node:net";
import { Worker } from "node:worker_threads";

export interface Sample {
  /** performance.now() at connect and at the end of the reply (or the failure). */
  start: number;
  end: number;
  ok: boolean;
  /** The body of a 200 reply, trimmed (the serving start's token). */
  token: string | undefined;
}

export interface LoadOptions {
  clients: number;
  /** The least time between two request starts of one client (ms). */
  paceMs: number;
  /** A request not answered by then fails (ms). */
  timeoutMs: number;
  /** Bounds of the whole load: it stops by itself at either. */
  maxRequests: number;
  maxSeconds: number;
}

/** One GET / over a fresh connection: the reply's token on a 200, undefined otherwise. */
export function tokenRequest(port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const s = connect({ host: "127.0.0.1", port }, () => s.end("GET / HTTP/1.0\r\nConnection: close\r\n\r\n"));
    s.setTimeout(timeoutMs, () => s.destroy());
    s.on("data", (d: Buffer) => {
      // A token reply is a few hundred bytes; anything far larger is not ours.
      if (size < 4096) chunks.push(d);
      size += d.length;
    });
    s.on("error", () => undefined);
    s.on("close", () => {
      const reply = Buffer.concat(chunks).toString("latin1");
      const head = reply.indexOf("\r\n\r\n");
      if (!/^HTTP\/1\.[01] 200 /.test(reply) || head < 0) return resolve(undefined);
      const token = reply.slice(head + 4).trim();
      resolve(token.length > 0 ? token : undefined);
    });
  });
}

/** What the load's worker posts: one sample (times on the shared clock, performance.timeOrigin + now()), or that it ended. */
export type LoadMessage = { sample: Sample } | { done: true };

/**
 * A running load on one port; `stop()` ends it and returns every sample. The clients run in a
 * worker thread of their own, so work on this thread (the agent driven in-process, its proxy)
 * neither delays their requests nor their clocks; samples are on this thread's performance.now().
 */
export class TokenLoad {
  readonly samples: Sample[] = [];
  private stopped = false;
  private readonly worker: Worker;
  private readonly done: Promise<void>;
  private readonly waiters = new Set<() => void>();

  constructor(readonly port: number, o: LoadOptions) {
    this.worker = new Worker(new URL("./switchover-load-worker.js", import.meta.url), { workerData: { port, o } });
    const shift = performance.timeOrigin;
    const wake = () => {
      for (const w of this.waiters) w();
    };
    this.done = new Promise<void>((resolve, reject) => {
      this.worker.on("message", (m: LoadMessage) => {
        if ("sample" in m) {
          this.samples.push({ ...m.sample, start: m.sample.start - shift, end: m.sample.end - shift });
          wake();
        } else {
          this.stopped = true;
          wake();
          resolve();
        }
      });
      this.worker.on("error", (err) => {
        this.stopped = true;
        wake();
        reject(err);
      });
      this.worker.on("exit", () => {
        this.stopped = true;
        wake();
        resolve();
      });
    });
  }

  /** Tokens of every reply so far. */
  tokens(): Set<string> {
    return new Set(this.samples.flatMap((s) => (s.token !== undefined ? [s.token] : [])));
  }

  /**
   * The first reply that ended after `since` carrying a token not in `old`: the first request
   * served by a new start. Undefined if none came within `timeoutMs` or the load ended.
   */
  async firstNew(since: number, old: ReadonlySet<string>, timeoutMs: number): Promise<Sample | undefined> {
    const deadline = performance.now() + timeoutMs;
    let from = 0;
    for (;;) {
      for (; from < this.samples.length; from++) {
        const s = this.samples[from]!;
        if (s.end >= since && s.token !== undefined && !old.has(s.token)) return s;
      }
      const left = deadline - performance.now();
      if (left <= 0 || this.stopped) return undefined;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
  }

  async stop(): Promise<Sample[]> {
    this.worker.postMessage("stop");
    await this.done;
    await this.worker.terminate();
    return this.samples;
  }
}

/** The longest time (ms) between two consecutive successful replies that ended from `from` to `to`. */
export function longestGap(samples: readonly Sample[], from: number, to: number): number {
  const ends = samples.filter((s) => s.ok && s.end >= from && s.end <= to).map((s) => s.end).sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < ends.length; i++) gap = Math.max(gap, ends[i]! - ends[i - 1]!);
  return gap;
}
