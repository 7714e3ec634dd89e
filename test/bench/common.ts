/** Small helpers the benchmarks share. */

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("median of nothing");
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * Runs `fn` over `items` with at most `limit` in flight. After a failure no new item starts, but
 * the ones in flight are waited for (so cleanup afterwards sees every container), then the first
 * error is thrown.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  async function worker(): Promise<void> {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  }
  const settled = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, () => worker()));
  for (const s of settled) if (s.status === "rejected") throw s.reason;
  return out;
}
