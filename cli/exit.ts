/**
 * How the program ends: a failure as one sentence on stderr with a non-zero exit, and long-running
 * commands stopped once on SIGINT/SIGTERM. Its own file so the client (loaded with the runtime)
 * and the action wrapper (loaded at start) share it without importing each other.
 */
import { ShadowError } from "../common/errors.js";
import { terminalSafe } from "./terminal-safe.js";

export function fail(err: unknown): never {
  // A failure's message can carry what the aggregator or a container said.
  process.stderr.write(`shadowlayer: ${terminalSafe(ShadowError.from(err).message)}\n`);
  process.exit(1);
}

/** Runs until SIGINT/SIGTERM, then calls stop once and exits. */
export function untilSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (sig: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`shadowlayer: ${sig}, stopping\n`);
    stop().then(
      () => process.exit(0),
      (err: unknown) => fail(err),
    );
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
}
