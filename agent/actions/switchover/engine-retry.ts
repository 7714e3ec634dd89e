/**
 * A step's engine calls retried while the engine cannot be reached (its socket refused, reset,
 * gone): with backoff, up to a bound, so a switchover resumes when a restarting engine answers
 * again. Anything else (a 404, a 409, a failed health gate) is not retried.
 */
export function isEngineUnreachable(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && ["ECONNREFUSED", "ENOENT", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EAI_AGAIN"].includes(code)) return true;
  const message = (err as { message?: unknown }).message;
  return typeof message === "string" && /socket hang up|connect ECONNREFUSED|connect ENOENT/.test(message);
}

/** Runs `fn`, again after each unreachable-engine error, for up to `boundMs` in all. */
export async function withEngineRetry<T>(fn: () => Promise<T>, boundMs: number, onRetry: (err: unknown, attempt: number) => void): Promise<T> {
  const end = Date.now() + boundMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isEngineUnreachable(err) || Date.now() >= end) throw err;
      onRetry(err, attempt);
      await new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** Math.min(attempt, 6), Math.max(1, end - Date.now()))));
    }
  }
}
