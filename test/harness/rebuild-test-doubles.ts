/**
 * Test doubles of the rebuild stage's pool and runner, for the scheduler's own tests: the real
 * builder pool and the real builds are tested with a real engine elsewhere; here what matters is
 * which job gets which slot when, so the doubles record that and let a test decide each build's
 * outcome.
 */
import Docker from "dockerode";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { BuilderStatusSchema, RebuildStepSchema, ShadowSchema, type BuilderStatus, type RebuildJob, type Shadow } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import type { Builder, BuilderLease, BuilderPoolApi, JobRunner } from "../../aggregator/rebuild/types.js";

interface TestBuilder {
  name: string;
  concurrency: number;
  healthy: boolean;
  leases: Set<TestLease>;
}

interface TestLease extends BuilderLease {
  readonly ac: AbortController;
}

/** A pool of named builders with a concurrency each; `lose(name)` plays a failed health check. */
export class TestBuilderPool implements BuilderPoolApi {
  readonly builders: TestBuilder[];
  /** The most leases held at once, per builder and in all. */
  readonly maxRunning = new Map<string, number>();
  maxRunningTotal = 0;
  private readonly waiters: Array<{ avoid: readonly string[]; take: (b: TestBuilder) => void; signal: AbortSignal }> = [];
  private readonly docker = new Docker({ socketPath: "/nonexistent/test-double.sock" });

  constructor(builders: Array<{ name: string; concurrency: number }>) {
    this.builders = builders.map((b) => ({ ...b, healthy: true, leases: new Set() }));
  }

  acquire(signal: AbortSignal, avoid: readonly string[] = []): Promise<BuilderLease> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const w = {
        avoid,
        signal,
        take: (b: TestBuilder) => {
          signal.removeEventListener("abort", onAbort);
          resolve(this.lease(b));
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(w);
      this.serve();
    });
  }

  private free(avoid: readonly string[]): TestBuilder | undefined {
    const open = this.builders.filter((b) => b.healthy && b.leases.size < b.concurrency);
    const preferred = open.filter((b) => !avoid.includes(b.name));
    // Another healthy builder exists (free or busy) → wait for it rather than take an avoided one.
    const otherHealthy = this.builders.some((b) => b.healthy && !avoid.includes(b.name));
    return preferred[0] ?? (otherHealthy ? undefined : open[0]);
  }

  private serve(): void {
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i]!;
      const b = this.free(w.avoid);
      if (b === undefined) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      w.take(b);
    }
  }

  private lease(b: TestBuilder): TestLease {
    const ac = new AbortController();
    const builder: Builder = { name: b.name, docker: this.docker, limits: {} };
    let released = false;
    const lease: TestLease = {
      builder,
      lost: ac.signal,
      ac,
      release: () => {
        if (released) return;
        released = true;
        b.leases.delete(lease);
        this.serve();
      },
    };
    b.leases.add(lease);
    this.maxRunning.set(b.name, Math.max(this.maxRunning.get(b.name) ?? 0, b.leases.size));
    this.maxRunningTotal = Math.max(this.maxRunningTotal, this.builders.reduce((n, x) => n + x.leases.size, 0));
    return lease;
  }

  /** The builder fails its health check: its leases are lost, it gets no more jobs. */
  lose(name: string): void {
    const b = this.builders.find((x) => x.name === name);
    if (b === undefined) throw new Error(`no test builder ${name}`);
    b.healthy = false;
    for (const l of b.leases) l.ac.abort(new Error(`test builder ${name} went away`));
    this.serve();
  }

  status(): BuilderStatus[] {
    return this.builders.map((b) =>
      create(BuilderStatusSchema, {
        name: b.name,
        endpoint: `unix:///test/${b.name}.sock`,
        healthy: b.healthy,
        concurrency: b.concurrency,
        running: b.leases.size,
        limits: "cpuset 1, memory 1 GiB",
        lastCheck: timestampFromDate(new Date()),
      }),
    );
  }

  async close(): Promise<void> {}
}

/** One build as the test double sees it. */
export interface TestBuild {
  job: RebuildJob;
  builder: string;
  signal: AbortSignal;
  log: (line: string) => void;
  /** Ends the build with a shadow, or with this error. */
  succeed: () => void;
  fail: (err: Error) => void;
}

/**
 * A runner whose builds wait until the test ends them (or, with `auto`, end at once as `auto`
 * says). Each build reports two steps and progress as a real one does; an aborted build rejects
 * with the signal's reason.
 */
export class TestJobRunner implements JobRunner {
  readonly builds: TestBuild[] = [];
  /** Decides a build's end as soon as it starts (undefined: the test ends it). */
  auto: ((b: TestBuild) => void) | undefined;
  private readonly waiting: Array<(b: TestBuild) => void> = [];

  run(job: RebuildJob, lease: BuilderLease, io: Parameters<JobRunner["run"]>[2]): Promise<Shadow> {
    return new Promise<Shadow>((resolve, reject) => {
      const started = new Date();
      const step = create(RebuildStepSchema, { name: "build", state: "running", startedAt: timestampFromDate(started) });
      io.update({ steps: [create(RebuildStepSchema, { name: "plan", state: "ok", startedAt: timestampFromDate(started), durationMs: 1, detail: "test double" }), step], progress: 25, strategy: job.strategy || "rebase", strategyReason: "test double" });
      const end = () => io.signal.removeEventListener("abort", onAbort);
      const onAbort = () => {
        end();
        reject(io.signal.reason);
      };
      io.signal.addEventListener("abort", onAbort, { once: true });
      const b: TestBuild = {
        job,
        builder: lease.builder.name,
        signal: io.signal,
        log: io.log,
        succeed: () => {
          end();
          io.update({ steps: [create(RebuildStepSchema, { ...step, state: "ok", durationMs: Date.now() - started.getTime() })], progress: 100 });
          resolve(create(ShadowSchema, { reference: `sha256:shadow-of-${job.id}`, imageId: `sha256:shadow-of-${job.id}`, localOnly: true, builtAt: timestampFromDate(new Date()) }));
        },
        fail: (err) => {
          end();
          reject(err);
        },
      };
      this.builds.push(b);
      const w = this.waiting.shift();
      if (w !== undefined) w(b);
      this.auto?.(b);
    });
  }

  /** The next build to start (one already started and not yet taken, or the next one). */
  private taken = 0;
  next(timeoutMs = 15_000): Promise<TestBuild> {
    const ready = this.builds[this.taken];
    if (ready !== undefined) {
      this.taken++;
      return Promise.resolve(ready);
    }
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no build started within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push((b) => {
        clearTimeout(t);
        this.taken++;
        resolve(b);
      });
    });
  }
}
