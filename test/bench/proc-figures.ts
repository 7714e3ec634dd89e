/** What /proc says one process costs: CPU time and resident memory, read the way `ps` reads them. */
import { readdirSync, readFileSync } from "node:fs";

/** utime+stime of a process in microseconds (USER_HZ 100). */
export function procCpuMicros(pid: number): number {
  const t = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = t.slice(t.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) * 10_000;
}

/** VmRSS in MB. */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

/** Children of `parent` whose command name is `comm` (e.g. the agent's bpftrace). */
export function childrenNamed(parent: number, comm: string): number[] {
  const out: number[] = [];
  for (const n of readdirSync("/proc")) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const st = readFileSync(`/proc/${n}/stat`, "utf8");
      const rest = st.slice(st.lastIndexOf(")") + 2).split(" ");
      if (Number(rest[1]) === parent && st.includes(`(${comm})`)) out.push(Number(n));
    } catch {
      // gone
    }
  }
  return out;
}

/** Percent of one core `pids` used between two readings: call once to start, the result to stop. */
export function cpuMeter(pids: readonly number[]): () => number {
  const sum = () => pids.reduce((n, p) => n + procCpuMicros(p), 0);
  const c0 = sum();
  const t0 = process.hrtime.bigint();
  return () => {
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    return ((sum() - c0) / us) * 100;
  };
}
