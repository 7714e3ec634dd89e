/**
 * One measured replacement: the load runs on the scenario's address before, during and after it;
 * the figures are taken from that window's samples. The clock starts when the command is issued
 * and stops at the end of the first reply carrying a token no reply had carried before: the first
 * request served by the new start.
 */
import { longestGap, TokenLoad, type LoadOptions, type Sample } from "./switchover-load.js";

/** What one window gives. */
export interface WindowFigures {
  /** Command to the first request served by the new start; undefined if none came in time. */
  ms: number | undefined;
  /** How long the command itself took to return. */
  commandMs: number;
  failed: number;
  requests: number;
  /** The longest time without a successful reply in the window. */
  gapMs: number;
}

export interface WindowOptions {
  load: LoadOptions;
  /** Load before the command (ms), after at least one success. */
  leadMs: number;
  /** Load after the replacement settled (ms). */
  tailMs: number;
  /** How long a new start may take to serve before the window gives up on it (ms). */
  newStartTimeoutMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `command` under load on `port`; `settle` runs after the new start served (off the
 * clock, under load: its gaps count). Throws if the service did not serve before the command.
 */
export async function measureWindow(port: number, o: WindowOptions, command: () => Promise<void>, settle: () => Promise<void>): Promise<WindowFigures> {
  const load = new TokenLoad(port, o.load);
  let samples: Sample[] = [];
  try {
    const warm = await load.firstNew(0, new Set(), 5_000);
    if (warm === undefined) throw new Error(`nothing served on 127.0.0.1:${port} before the replacement`);
    await sleep(o.leadMs);
    const old = load.tokens();
    const t0 = performance.now();
    let commandMs = 0;
    let commandErr: unknown;
    const cmd = command().then(
      () => void (commandMs = performance.now() - t0),
      (err: unknown) => void (commandErr = err),
    );
    const first = await load.firstNew(t0, old, o.newStartTimeoutMs);
    await cmd;
    if (commandErr !== undefined) throw commandErr;
    await settle();
    await sleep(o.tailMs);
    samples = await load.stop();
    return {
      ms: first === undefined ? undefined : first.end - t0,
      commandMs,
      failed: samples.filter((s) => !s.ok).length,
      requests: samples.length,
      gapMs: longestGap(samples, warm.end, performance.now()),
    };
  } finally {
    await load.stop();
  }
}
