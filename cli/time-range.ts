/**
 * `--since` / `--until` for the commands that read a span of telemetry (`windows`, `train`): a
 * duration back from now (`90s`, `30m`, `24h`, `7d`, `2w`) or an ISO 8601 time.
 */
import { Code, ShadowError } from "../common/errors.js";

/** Windows `train` reads when neither --since nor --from-file says: the last day. */
export const DEFAULT_SINCE = "24h";

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** A time from a flag's text; `flag` names it in the error. */
export function parseTimeFlag(text: string, flag: string, now = new Date()): Date {
  const d = /^(\d+(?:\.\d+)?)(s|m|h|d|w)$/.exec(text.trim());
  if (d !== null) {
    const ms = Number(d[1]) * (UNIT_MS[d[2] as string] ?? 0);
    if (Number.isFinite(ms) && ms <= 100 * 365 * 86_400_000) return new Date(now.getTime() - ms);
  } else if (/^\d{4}-\d{2}-\d{2}/.test(text.trim())) {
    const t = Date.parse(text.trim());
    if (Number.isFinite(t)) return new Date(t);
  }
  throw new ShadowError(Code.InvalidArgument, `${flag}: expected a duration back from now (90s, 30m, 24h, 7d) or an ISO time, got ${JSON.stringify(text.slice(0, 80))}`);
}

/** The span [since, until) from the flags; `until` defaults to now. */
export function parseTimeRange(flags: { since?: string; until?: string }, now = new Date()): { since: Date; until: Date } {
  if (flags.since === undefined) throw new ShadowError(Code.InvalidArgument, "--since is required (a duration such as 24h, or an ISO time)");
  const since = parseTimeFlag(flags.since, "--since", now);
  const until = flags.until === undefined ? now : parseTimeFlag(flags.until, "--until", now);
  if (until <= since) throw new ShadowError(Code.InvalidArgument, `--until (${until.toISOString()}) must be after --since (${since.toISOString()})`);
  return { since, until };
}
