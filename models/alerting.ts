/**
 * Alert hygiene on top of the scores, per stream (one container + layer), so one spike does not
 * page anyone: a warm-up before any score counts, persistence (k of the last n windows ≥ the raise
 * level), hysteresis (an alert clears only when fewer than k of the last n stay ≥ a lower level)
 * and a cooldown after it clears (models/ANOMALY.md, "Alerting").
 */

export interface AlertPolicy {
  /** Windows of a new stream whose scores do not count (start-up noise). */
  warmupWindows: number;
  /** Raise when at least k of the last n counted scores are ≥ `raise`. */
  k: number;
  n: number;
  raise: number;
  /** Clear when fewer than k of the last n are ≥ `clear` (below `raise`: hysteresis). */
  clear: number;
  /** Counted windows after a clear during which no new alert is raised. */
  cooldownWindows: number;
}

export const DEFAULT_ALERT_POLICY: Readonly<AlertPolicy> = { warmupWindows: 3, k: 2, n: 3, raise: 50, clear: 40, cooldownWindows: 6 };
/** Most streams followed; the least recently updated is forgotten beyond it. */
export const MAX_ALERT_STREAMS = 10_000;

export interface AlertState {
  /** The stream is alerting after this window. */
  alerting: boolean;
  /** The window counted (past the warm-up). */
  counted: boolean;
  /** `alerting` changed with this window. */
  changed: boolean;
}

interface Stream {
  seen: number;
  recent: number[];
  alerting: boolean;
  cooldown: number;
}

export class AlertGate {
  readonly policy: Readonly<AlertPolicy>;
  private readonly streams = new Map<string, Stream>();

  constructor(policy: Partial<AlertPolicy> = {}) {
    const p = { ...DEFAULT_ALERT_POLICY, ...policy };
    if (!(Number.isInteger(p.n) && p.n >= 1 && Number.isInteger(p.k) && p.k >= 1 && p.k <= p.n)) throw new RangeError(`alert policy needs 1 ≤ k ≤ n, got k=${p.k} n=${p.n}`);
    if (!(p.clear <= p.raise)) throw new RangeError(`alert policy: clear ${p.clear} is above raise ${p.raise}`);
    if (!(Number.isInteger(p.warmupWindows) && p.warmupWindows >= 0 && Number.isInteger(p.cooldownWindows) && p.cooldownWindows >= 0)) {
      throw new RangeError("alert policy: warm-up and cooldown are whole numbers of windows");
    }
    this.policy = p;
  }

  /** Feeds one window's score of a stream (in window order) and says whether the stream alerts. */
  update(key: string, score: number): AlertState {
    const p = this.policy;
    const s = this.stream(key);
    s.seen++;
    if (s.seen <= p.warmupWindows) return { alerting: false, counted: false, changed: false };
    s.recent.push(Number.isFinite(score) ? score : 0);
    if (s.recent.length > p.n) s.recent.shift();
    const before = s.alerting;
    if (s.alerting) {
      if (s.recent.filter((x) => x >= p.clear).length < p.k) {
        s.alerting = false;
        s.cooldown = p.cooldownWindows;
      }
    } else if (s.cooldown > 0) s.cooldown--;
    else if (s.recent.filter((x) => x >= p.raise).length >= p.k) s.alerting = true;
    return { alerting: s.alerting, counted: true, changed: s.alerting !== before };
  }

  /** Forgets a stream (its container or layer went away). */
  forget(key: string): void {
    this.streams.delete(key);
  }

  private stream(key: string): Stream {
    let s = this.streams.get(key);
    if (s) {
      this.streams.delete(key);
    } else {
      if (this.streams.size >= MAX_ALERT_STREAMS) this.streams.delete(this.streams.keys().next().value!);
      s = { seen: 0, recent: [], alerting: false, cooldown: 0 };
    }
    this.streams.set(key, s);
    return s;
  }
}
