/**
 * The latency a served container keeps while the build pool works: p99 of loopback requests to
 * a busybox httpd, measured in alternating rounds without and with a build running, so both
 * sides see the same machine noise. Bounded in count and time; stops by itself.
 */
import { oneRequest } from "./forking-service.js";

/** The q-quantile (0-1) of a list, nearest rank. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) throw new Error("quantile of nothing");
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** `count` requests, `concurrency` at a time; each one's milliseconds (failures count as the timeout). */
export async function requestTimes(port: number, count: number, concurrency: number, timeoutMs = 2_000): Promise<{ ms: number[]; failed: number }> {
  const ms: number[] = [];
  let failed = 0;
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const t0 = performance.now();
      const ok = await oneRequest(port, timeoutMs);
      const dt = performance.now() - t0;
      ms.push(ok ? dt : timeoutMs);
      if (!ok) failed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { ms, failed };
}

export interface InterleavedP99 {
  quiet_p99_ms: number;
  busy_p99_ms: number;
  ratio: number;
  rounds: number;
  requests_per_phase: number;
  failed: number;
}

/**
 * Rounds of (quiet phase, busy phase): `busy()` starts the work and resolves once it is under
 * way, returning how to stop it; the phase's requests run while it works.
 */
export async function interleavedP99(
  port: number,
  o: { rounds: number; requests: number; concurrency: number },
  busy: () => Promise<{ stop(): Promise<void> }>,
): Promise<InterleavedP99> {
  const quiet: number[] = [];
  const loaded: number[] = [];
  let failed = 0;
  for (let r = 0; r < o.rounds; r++) {
    const q = await requestTimes(port, o.requests, o.concurrency);
    quiet.push(...q.ms);
    const work = await busy();
    try {
      const b = await requestTimes(port, o.requests, o.concurrency);
      loaded.push(...b.ms);
      failed += q.failed + b.failed;
    } finally {
      await work.stop();
    }
  }
  const qp = quantile(quiet, 0.99);
  const bp = quantile(loaded, 0.99);
  return { quiet_p99_ms: round2(qp), busy_p99_ms: round2(bp), ratio: round2(bp / qp), rounds: o.rounds, requests_per_phase: o.requests, failed };
}

function round2(x: number): number {
  return Math.round(x * 1000) / 1000;
}
