/**
 * The pool of builder engines the scheduler leases from: each builder a Docker endpoint with its
 * own concurrency, checked every few seconds (ping and version, bounded by a timeout) and again
 * when a lease is handed out from a check grown old. An unhealthy builder is skipped; the leases
 * it holds get `lost` aborted so that their jobs move to another; one that answers again is used
 * again. Waiters are served in call order.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import Docker from "dockerode";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { withTimeout } from "../../common/timeout.js";
import { BuilderStatusSchema, type BuilderStatus } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { builderWarnings, describeLimits, parseEndpoint } from "./builder-config.js";
import type { Builder, BuilderConfig, BuilderLease, BuilderPoolApi } from "./types.js";

export interface BuilderPoolOptions {
  builders: readonly BuilderConfig[];
  log: Logger;
  /** Between health checks (default 5 s). */
  checkIntervalMs?: number;
  /** A check that has not answered by then fails (default 3 s). */
  checkTimeoutMs?: number;
  /** A builder last checked longer ago is checked again before a lease is handed out (default two intervals). */
  recheckAfterMs?: number;
}

const DEFAULT_INTERVAL_MS = 5000;
const DEFAULT_TIMEOUT_MS = 3000;

interface Slot {
  readonly lost: AbortController;
}

interface Member {
  readonly config: BuilderConfig;
  readonly docker: Docker;
  readonly log: Logger;
  /** The engine's data root, for a unix socket (learned at the first good check). */
  localRoot?: string;
  healthy: boolean;
  error: string;
  engineVersion: string;
  lastCheck?: Date;
  checking?: Promise<void>;
  readonly slots: Set<Slot>;
}

interface Waiter {
  readonly avoid: readonly string[];
  readonly resolve: (lease: BuilderLease) => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

/** The calls a health check makes; dockerode takes an abortSignal on each, its typings do not say so. */
interface EngineProbe {
  ping(o: { abortSignal: AbortSignal }): Promise<unknown>;
  version(o: { abortSignal: AbortSignal }): Promise<unknown>;
  info(o: { abortSignal: AbortSignal }): Promise<unknown>;
}

/** One dockerode per builder, without a request timeout: a build step may print nothing for minutes. */
function dockerFor(c: BuilderConfig): Docker {
  const where = parseEndpoint(c.endpoint, c.endpoint);
  if (where.kind === "unix") return new Docker({ socketPath: where.path });
  if (c.tls === undefined) return new Docker({ host: where.host, port: where.port, protocol: "http" });
  return new Docker({ host: where.host, port: where.port, protocol: "https", ca: c.tls.ca, cert: c.tls.cert, key: c.tls.key });
}

export class BuilderPool implements BuilderPoolApi {
  private readonly members: Member[];
  private readonly waiters: Waiter[] = [];
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly recheckAfterMs: number;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(opts: BuilderPoolOptions) {
    if (opts.builders.length === 0) throw new ShadowError(Code.InvalidArgument, "the builder pool needs at least one builder");
    this.intervalMs = opts.checkIntervalMs ?? DEFAULT_INTERVAL_MS;
    this.timeoutMs = opts.checkTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.recheckAfterMs = opts.recheckAfterMs ?? 2 * this.intervalMs;
    this.members = opts.builders.map((config) => ({
      config,
      docker: dockerFor(config),
      log: opts.log.child({ builder: config.name }),
      healthy: false,
      error: "not checked yet",
      engineVersion: "",
      slots: new Set<Slot>(),
    }));
    for (const m of this.members) {
      for (const w of builderWarnings(m.config)) m.log.warn(w);
      void this.check(m);
    }
    this.timer = setInterval(() => {
      for (const m of this.members) void this.check(m);
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Resolves once every builder has been checked once (tests, and a start that wants a status to show). */
  async ready(): Promise<void> {
    await Promise.all(this.members.map((m) => m.checking ?? this.check(m)));
  }

  /** A builder's engine by name (garbage collection removes local shadows there), healthy or not. */
  docker(name: string): Docker | undefined {
    return this.members.find((m) => m.config.name === name)?.docker;
  }

  acquire(signal: AbortSignal, avoid: readonly string[] = []): Promise<BuilderLease> {
    if (this.closed) return Promise.reject(new ShadowError(Code.BuilderUnavailable, "the builder pool is closed"));
    if (signal.aborted) return Promise.reject(cancelled(signal));
    return new Promise<BuilderLease>((resolve, reject) => {
      const w: Waiter = {
        avoid,
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(cancelled(signal));
        },
      };
      signal.addEventListener("abort", w.onAbort, { once: true });
      this.waiters.push(w);
      this.pump();
    });
  }

  status(): BuilderStatus[] {
    return this.members.map((m) =>
      create(BuilderStatusSchema, {
        name: m.config.name,
        endpoint: m.config.endpoint,
        healthy: m.healthy,
        error: m.error,
        concurrency: m.config.concurrency,
        running: m.slots.size,
        engineVersion: m.engineVersion,
        limits: describeLimits(m.config.limits),
        ...(m.lastCheck !== undefined ? { lastCheck: timestampFromDate(m.lastCheck) } : {}),
      }),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    const err = new ShadowError(Code.BuilderUnavailable, "the builder pool is closed");
    for (const w of this.waiters.splice(0)) {
      w.signal.removeEventListener("abort", w.onAbort);
      w.reject(err);
    }
    for (const m of this.members) for (const s of m.slots) s.lost.abort(err);
    await Promise.all(this.members.map((m) => m.checking));
  }

  /** Hands free slots to waiters, oldest first; a waiter no builder can take now does not hold up the ones behind it. */
  private pump(): void {
    if (this.closed) return;
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i] as Waiter;
      const m = this.pick(w.avoid);
      if (m === undefined) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      w.signal.removeEventListener("abort", w.onAbort);
      w.resolve(this.lease(m));
    }
  }

  /**
   * A healthy builder with a free slot, freshly checked. `avoid` is honoured while another builder
   * is healthy (even if busy: the waiter then waits for it).
   */
  private pick(avoid: readonly string[]): Member | undefined {
    const healthy = this.members.filter((m) => m.healthy);
    const others = healthy.filter((m) => !avoid.includes(m.config.name));
    const candidates = others.length > 0 ? others : healthy;
    for (const m of candidates) {
      if (m.slots.size >= m.config.concurrency) continue;
      if (m.lastCheck === undefined || Date.now() - m.lastCheck.getTime() > this.recheckAfterMs) {
        // Not checked recently (a timer held up, a long idle): check before handing it out.
        void this.check(m);
        continue;
      }
      return m;
    }
    return undefined;
  }

  private lease(m: Member): BuilderLease {
    const slot: Slot = { lost: new AbortController() };
    m.slots.add(slot);
    const builder: Builder = {
      name: m.config.name,
      docker: m.docker,
      limits: m.config.limits,
      ...(m.localRoot !== undefined ? { localRoot: m.localRoot } : {}),
    };
    m.log.debug({ running: m.slots.size, concurrency: m.config.concurrency }, "builder leased");
    return {
      builder,
      lost: slot.lost.signal,
      release: () => {
        if (!m.slots.delete(slot)) return;
        m.log.debug({ running: m.slots.size }, "builder released");
        this.pump();
      },
    };
  }

  /** One health check at a time per builder; callers share the one in flight. */
  private check(m: Member): Promise<void> {
    m.checking ??= this.runCheck(m).finally(() => {
      delete m.checking;
      this.pump();
    });
    return m.checking;
  }

  private async runCheck(m: Member): Promise<void> {
    const ac = new AbortController();
    try {
      const probe = m.docker as unknown as EngineProbe;
      await withTimeout(probe.ping({ abortSignal: ac.signal }), this.timeoutMs, "ping");
      const v = (await withTimeout(probe.version({ abortSignal: ac.signal }), this.timeoutMs, "version")) as { Version?: unknown };
      if (m.localRoot === undefined && m.config.endpoint.startsWith("unix://")) {
        const info = (await withTimeout(probe.info({ abortSignal: ac.signal }), this.timeoutMs, "info")) as { DockerRootDir?: unknown };
        if (typeof info.DockerRootDir === "string" && info.DockerRootDir !== "") m.localRoot = info.DockerRootDir;
      }
      m.engineVersion = typeof v.Version === "string" ? v.Version : "";
      m.lastCheck = new Date();
      if (!m.healthy) m.log.info({ engine: m.engineVersion, limits: describeLimits(m.config.limits) }, m.error === "not checked yet" ? "builder ready" : "builder back");
      m.healthy = true;
      m.error = "";
    } catch (err) {
      ac.abort();
      const why = err instanceof Error ? err.message : String(err);
      m.lastCheck = new Date();
      if (m.healthy || m.error !== why) m.log.warn({ err: why, leases: m.slots.size }, "builder failed its health check: skipped until it answers again");
      m.healthy = false;
      m.error = `${m.config.endpoint}: ${why}`;
      const lost = new ShadowError(Code.BuilderUnavailable, `builder ${m.config.name} failed its health check (${why})`, { cause: err });
      for (const s of m.slots) s.lost.abort(lost);
    }
  }
}

function cancelled(signal: AbortSignal): ShadowError {
  const r: unknown = signal.reason;
  return r instanceof ShadowError ? r : new ShadowError(Code.Cancelled, "waiting for a builder was cancelled", { cause: r });
}

/** Starts the pool; its first checks run in the background (`ready()` waits for them). */
export function startBuilderPool(opts: BuilderPoolOptions): BuilderPool {
  return new BuilderPool(opts);
}
