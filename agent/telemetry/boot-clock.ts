/**
 * The distance between the kernel's two clocks since boot: bpftrace's `nsecs` is CLOCK_MONOTONIC,
 * a process's start time (/proc/<pid>/stat field 22, task->start_boottime) is CLOCK_BOOTTIME, and
 * they differ by the time the host spent suspended. An exec's time is compared with a
 * container's start only after this conversion.
 */
import { libcFunctionOrNull } from "../runtime/libc.js";
import { readProcFile } from "../runtime/proc-files.js";

/** CLOCK_BOOTTIME minus CLOCK_MONOTONIC, and how far off that can be. */
export interface BootOffset {
  offsetNs: bigint;
  errorNs: bigint;
}

const CLOCK_BOOTTIME = 7;
type ClockGettime = (clock: number, ts: Buffer) => number;
let clockGettime: ClockGettime | null | undefined;

const loadClockGettime = () => libcFunctionOrNull<ClockGettime>("int clock_gettime(int clockid, _Out_ uint8_t *tp)");

const ts = Buffer.alloc(16);

/**
 * Measured now: through clock_gettime(CLOCK_BOOTTIME) between two monotonic reads (error: a few
 * microseconds), else from /proc/uptime (boottime, in hundredths of a second).
 */
export function bootMinusMonotonic(procRoot = "/proc"): BootOffset | undefined {
  if (clockGettime === undefined) clockGettime = loadClockGettime();
  if (clockGettime !== null) {
    const before = process.hrtime.bigint();
    const ok = clockGettime(CLOCK_BOOTTIME, ts) === 0;
    const after = process.hrtime.bigint();
    if (ok) {
      const boot = ts.readBigInt64LE(0) * 1_000_000_000n + ts.readBigInt64LE(8);
      return { offsetNs: boot - (before + after) / 2n, errorNs: (after - before) / 2n + 1000n };
    }
  }
  const mono = process.hrtime.bigint();
  const m = /^(\d+)\.(\d{2}) /.exec(readProcFile(`${procRoot}/uptime`) ?? "");
  if (m === null) return undefined;
  const boot = BigInt(m[1] ?? "0") * 1_000_000_000n + BigInt(m[2] ?? "0") * 10_000_000n;
  // The uptime shown is cut to 10 ms, so the true offset lies within 10 ms above this one.
  return { offsetNs: boot - mono + 5_000_000n, errorNs: 5_000_000n + 1000n };
}
