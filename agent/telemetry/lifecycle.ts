/**
 * What the kernel's fork, exec and exit events say about processes the sampler may never see: the
 * layer each exec'd process runs from, the parent each forked one came from, and the totals each
 * process had at exit. Exits arrive asynchronously (bpftrace's perf buffers, one per CPU): they are
 * queued, ordered by kernel time and handed to the sampler at its next tick, grouped by container.
 * Every map is bounded (threads produce fork events too, and most forks never exit through us).
 * Records outlive their process on purpose: an orphan's layer is still its dead parent's. A
 * recycled pid cannot borrow them: exec records carry the start time, and a parent's exec counts
 * for a child only if it came before the fork.
 */
import type { ForkEvent, ProcessExitEvent } from "./exec-ebpf.js";

/** The layer an exec'd process runs from, as the exec tracker attributed it. */
export interface ExecRecord {
  containerId: string;
  layerId: string;
  startTimeTicks: bigint;
  monoNs: bigint;
}

interface ForkRecord {
  parent: number;
  monoNs: bigint;
  at: number;
}

interface QueuedExit {
  ev: ProcessExitEvent;
  at: number;
}

export interface LifecycleOptions {
  /** The container whose mount namespace `mntns` was when the event happened, undefined if not known (yet). */
  containerOf: (mntns: number, monoNs: bigint) => string | undefined;
  /** How long an exit from an unknown namespace waits for its container (ms), default 3000. */
  holdMs?: number;
  /** How long a fork record is kept (ms), default 60000: a thread's never ends by an exit event. */
  forkTtlMs?: number;
  now?: () => number;
}

/** Bounds: a fork storm of 10,000 tasks/s fills the fork map in under 7 s and the oldest go first. */
const MAX_FORKS = 65_536;
const MAX_EXECS = 65_536;
const MAX_QUEUED = 50_000;
/** How far up a chain of forks-without-exec the parent's layer is looked for. */
const MAX_FORK_DEPTH = 16;

/** Sets `k` as the newest entry of `m`, dropping the oldest past `max`; true when one was dropped. */
export function setBounded<K, V>(m: Map<K, V>, k: K, v: V, max: number): boolean {
  m.delete(k);
  m.set(k, v);
  if (m.size <= max) return false;
  const oldest = m.keys().next();
  if (!oldest.done) m.delete(oldest.value);
  return true;
}

export class ProcessLifecycle {
  private readonly forks = new Map<number, ForkRecord>();
  private readonly execs = new Map<number, ExecRecord>();
  private queue: QueuedExit[] = [];
  private readonly now: () => number;
  /** dropped: exits never matched to a container, or pushed out of a full queue; evicted: fork/exec records pushed out by the bounds. */
  readonly stats = { forks: 0, exits: 0, dropped: 0, evicted: 0 };

  constructor(private readonly o: LifecycleOptions) {
    this.now = o.now ?? Date.now;
  }

  onFork(ev: ForkEvent): void {
    this.stats.forks++;
    if (ev.child === ev.parent) return;
    if (setBounded(this.forks, ev.child, { parent: ev.parent, monoNs: ev.monoNs, at: this.now() }, MAX_FORKS)) this.stats.evicted++;
  }

  /** An exec the tracker attributed to a container's layer (eBPF events only: they carry the identity). */
  onExec(pid: number, rec: ExecRecord): void {
    if (setBounded(this.execs, pid, rec, MAX_EXECS)) this.stats.evicted++;
  }

  onExit(ev: ProcessExitEvent): void {
    this.stats.exits++;
    this.queue.push({ ev, at: this.now() });
    if (this.queue.length > MAX_QUEUED) {
      this.queue.shift();
      this.stats.dropped++;
    }
  }

  /** Queued exits, in kernel time order, per container; exits from a namespace not known yet wait up to holdMs. */
  drain(): Map<string, ProcessExitEvent[]> {
    const out = new Map<string, ProcessExitEvent[]>();
    if (this.queue.length === 0) {
      this.expireForks();
      return out;
    }
    const hold = this.o.holdMs ?? 3000;
    const now = this.now();
    const keep: QueuedExit[] = [];
    this.queue.sort((a, b) => (a.ev.monoNs < b.ev.monoNs ? -1 : a.ev.monoNs > b.ev.monoNs ? 1 : 0));
    for (const q of this.queue) {
      const id = this.o.containerOf(q.ev.mntns, q.ev.monoNs);
      if (id === undefined) {
        if (now - q.at > hold) this.stats.dropped++;
        else keep.push(q);
        continue;
      }
      let list = out.get(id);
      if (list === undefined) out.set(id, (list = []));
      list.push(q.ev);
    }
    this.queue = keep;
    this.expireForks();
    return out;
  }

  /** The exec record of this process identity (pid + start time), if it exec'd under eBPF. */
  execOf(pid: number, startTimeTicks: bigint): ExecRecord | undefined {
    const r = this.execs.get(pid);
    return r !== undefined && r.startTimeTicks === startTimeTicks ? r : undefined;
  }

  /**
   * The layer a process that did not exec (as far as we saw) inherited: its parent's layer at fork
   * time, from the parent's exec before the fork, else `sampled(parent)` (the layer the sampler
   * attributed the parent to), else the grandparent's, and so on.
   */
  inheritedLayer(containerId: string, pid: number, sampled: (pid: number) => string | undefined): string | undefined {
    let child = pid;
    for (let depth = 0; depth < MAX_FORK_DEPTH; depth++) {
      const f = this.forks.get(child);
      if (f === undefined) return undefined;
      const e = this.execs.get(f.parent);
      if (e !== undefined && e.containerId === containerId && e.monoNs <= f.monoNs) return e.layerId;
      const s = sampled(f.parent);
      if (s !== undefined) return s;
      child = f.parent;
    }
    return undefined;
  }

  /** Records held, for tests and status. */
  get sizes(): { forks: number; execs: number; queued: number } {
    return { forks: this.forks.size, execs: this.execs.size, queued: this.queue.length };
  }

  private expireForks(): void {
    const cutoff = this.now() - (this.o.forkTtlMs ?? 60_000);
    // Insertion order is age order (setBounded re-inserts), so the expired ones are at the front.
    for (const [pid, f] of this.forks) {
      if (f.at >= cutoff) break;
      this.forks.delete(pid);
    }
  }
}
