/**
 * Where exec events come from: eBPF (bpftrace on sched_process_exec, short-lived processes
 * included) when it can run here, else /proc polling at each sampling tick. The choice, and why,
 * is logged once and kept for the agent's status; bpftrace dying later falls back to polling.
 */
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { AgentMetrics } from "../metrics.js";
import { readProcLink } from "../runtime/proc-files.js";
import { BpfExecSource, ebpfUnavailableReason, type ExecEvent, type ForkEvent, type ProcessExitEvent } from "./exec-ebpf.js";
import type { ExecSourceKind } from "./exec-tracker.js";

/** auto (eBPF when available, else polling), ebpf (required), proc (polling only). */
export type ExecSourceChoice = "auto" | "ebpf" | "proc";

export interface ExecSourceOptions {
  procRoot: string;
  log: Logger;
  metrics: AgentMetrics;
  choice: ExecSourceChoice;
  bpftrace?: string;
  /** The polling period, ms (said in the log: processes shorter than that can be missed). */
  pollMs: number;
  /** Every exec event from eBPF (polling reports through the sampler instead). */
  onExec: (ev: ExecEvent) => void;
  /** Every fork and process exit from eBPF (none while polling). */
  onFork?: (ev: ForkEvent) => void;
  onProcessExit?: (ev: ProcessExitEvent) => void;
}

/** bpftrace's own counts while it runs. */
export interface BpfCounters {
  events: number;
  forks: number;
  exits: number;
  lost: number;
  malformed: number;
}

export class ExecSource {
  private bpf: BpfExecSource | undefined;
  private active: ExecSourceKind = "proc-poll";
  private why = "";
  private stopped = false;

  constructor(private readonly o: ExecSourceOptions) {}

  get kind(): ExecSourceKind {
    return this.active;
  }

  get reason(): string {
    return this.why;
  }

  /** bpftrace's counts, undefined while polling. */
  get counters(): BpfCounters | undefined {
    return this.bpf?.counters;
  }

  /** Chooses the source; rejects only when eBPF is required and cannot run. */
  async start(): Promise<void> {
    const want = this.o.choice;
    const log = this.o.log;
    if (want === "proc") {
      this.usePolling("configured (--exec-source proc)");
      return;
    }
    const why = ebpfUnavailableReason(this.o.bpftrace === undefined ? {} : { bpftrace: this.o.bpftrace });
    if (why !== undefined) {
      if (want === "ebpf") throw new ShadowError(Code.FailedPrecondition, `eBPF exec events were required but cannot run: ${why}`);
      this.usePolling(why);
      return;
    }
    // The host's mount namespace: init's, else kthreadd's (kernel threads always live in the host's;
    // some hosts refuse even root a look at pid 1's namespaces).
    const nsLink = readProcLink(`${this.o.procRoot}/1/ns/mnt`) ?? readProcLink(`${this.o.procRoot}/2/ns/mnt`);
    const hostMntNs = Number(/\[(\d+)\]/.exec(nsLink ?? "")?.[1] ?? NaN);
    const bpf = new BpfExecSource({
      log,
      ...(Number.isFinite(hostMntNs) ? { hostMntNs } : {}),
      ...(this.o.bpftrace !== undefined ? { bpftrace: this.o.bpftrace } : {}),
    });
    bpf.on("exec", (ev) => this.o.onExec(ev));
    bpf.on("fork", (ev) => this.o.onFork?.(ev));
    bpf.on("processExit", (ev) => this.o.onProcessExit?.(ev));
    bpf.on("lost", (n) => this.o.metrics.execEventsLost.inc(n));
    bpf.on("exit", (reason) => {
      if (this.stopped || this.bpf !== bpf) return;
      this.bpf = undefined;
      this.usePolling(`bpftrace stopped: ${reason}`);
    });
    try {
      await bpf.start();
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (want === "ebpf") throw ShadowError.from(err, Code.FailedPrecondition);
      this.usePolling(`bpftrace failed to start: ${reason}`);
      return;
    }
    this.bpf = bpf;
    this.active = "ebpf";
    this.why = "bpftrace tracepoint:sched:sched_process_exec, sched_process_fork, sched_switch (process exit)";
    this.o.metrics.execSource.set({ source: "ebpf" }, 1);
    log.info({ execSource: "ebpf" }, "exec, fork and exit events: eBPF (bpftrace sched_process_exec/fork, sched_switch at exit), short-lived processes included and charged at exit");
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.bpf?.stop();
  }

  private usePolling(reason: string): void {
    this.active = "proc-poll";
    this.why = reason;
    this.o.metrics.execSource.set({ source: "ebpf" }, 0);
    this.o.metrics.execSource.set({ source: "proc-poll" }, 1);
    this.o.log.warn({ execSource: "proc-poll", reason }, `exec events: /proc polling every ${this.o.pollMs} ms (processes shorter than that can be missed): ${reason}`);
  }
}
