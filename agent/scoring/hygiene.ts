/**
 * Alert hygiene for anomaly scores, per (container, layer), so one spike does not page anyone:
 *  - warm-up: the first `warmupWindows` scored windows never alert;
 *  - persistence: an alert is raised when `k` of the last `n` scores are at or above `raiseAt`;
 *  - hysteresis: once raised, it holds until a score falls below `clearBelow`;
 *  - cooldown: after it clears, no new alert for `cooldownWindows` windows.
 * Pure: the state is a value passed in and returned, so the rules are testable without a model.
 */

export interface HygieneRules {
  /** Scored windows that never alert at the start of a (container, layer) (default 3). */
  warmupWindows: number;
  /** Persistence: k of the last n windows at or above `raiseAt` (default 2 of 3). */
  k: number;
  n: number;
  /** Raise level (default 50, the calibration's 99.5th percentile). */
  raiseAt: number;
  /** Clear level: an alert holds until a score is below it (default 35). */
  clearBelow: number;
  /** Windows after an alert clears in which no new alert is raised (default 3). */
  cooldownWindows: number;
}

export const DEFAULT_HYGIENE: Readonly<HygieneRules> = { warmupWindows: 3, k: 2, n: 3, raiseAt: 50, clearBelow: 35, cooldownWindows: 3 };

export interface HygieneState {
  /** Windows scored so far (capped at the warm-up length; only "past warm-up" matters). */
  seen: number;
  /** The last up-to-n scores, oldest first. */
  recent: number[];
  alerting: boolean;
  /** Windows of cooldown left. */
  cooldown: number;
}

export const INITIAL_HYGIENE: Readonly<HygieneState> = { seen: 0, recent: [], alerting: false, cooldown: 0 };

/** Checks rules given by a person (flags, tests); a rule that cannot hold is an error. */
export function hygieneRules(o: Partial<HygieneRules> = {}): HygieneRules {
  const r = { ...DEFAULT_HYGIENE, ...o };
  const whole = (v: number) => Number.isInteger(v) && v >= 0;
  if (!whole(r.warmupWindows) || !whole(r.cooldownWindows)) throw new RangeError("warm-up and cooldown are whole numbers of windows");
  if (!whole(r.k) || !whole(r.n) || r.k < 1 || r.k > r.n) throw new RangeError(`persistence ${r.k} of ${r.n} is not 1 <= k <= n`);
  if (!(r.clearBelow <= r.raiseAt)) throw new RangeError(`clear level ${r.clearBelow} is above the raise level ${r.raiseAt}`);
  return r;
}

/** The state after one more scored window. A non-finite score counts as below every level. */
export function nextHygiene(s: Readonly<HygieneState>, score: number, r: Readonly<HygieneRules> = DEFAULT_HYGIENE): HygieneState {
  const v = Number.isFinite(score) ? score : Number.NEGATIVE_INFINITY;
  const seen = Math.min(s.seen + 1, r.warmupWindows + 1);
  const recent = [...s.recent, v].slice(-r.n);
  if (s.alerting) {
    if (v >= r.clearBelow) return { seen, recent, alerting: true, cooldown: 0 };
    // Cleared: the window that cleared it starts the cooldown, and the old highs no longer count.
    return { seen, recent: [], alerting: false, cooldown: r.cooldownWindows };
  }
  if (seen <= r.warmupWindows) return { seen, recent, alerting: false, cooldown: 0 };
  if (s.cooldown > 0) return { seen, recent, alerting: false, cooldown: s.cooldown - 1 };
  const high = recent.filter((x) => x >= r.raiseAt).length;
  return { seen, recent, alerting: high >= r.k, cooldown: 0 };
}
