/**
 * How every command runs: output lines on stdout, and any failure as one sentence on stderr with a
 * non-zero exit; long-running commands stop on SIGINT/SIGTERM.
 */
import { fail, untilSignal } from "./exit.js";

/** The client commands' runtime (protobuf, gRPC, TLS, schemas, formats), loaded when one of them runs. */
export const runtime = () => import("./runtime.js");

export const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** Wraps a command's action so that whatever it throws ends the program the one way above. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      fail(err);
    }
  };
}

/** The action of a command that runs a program until a signal: `start` loads it, runs it and returns its stop. */
export function runUntilSignal<O extends { insecure?: boolean | undefined }>(start: (o: O) => Promise<() => Promise<void>>): (o: O) => Promise<void> {
  return action(async (o: O) => {
    if (o.insecure === true) warnInsecure();
    untilSignal(await start(o));
  });
}

function warnInsecure(): void {
  process.stderr.write("\n*** WARNING: --insecure: no TLS and no client certificates. Anyone who can reach the port can read and write. Never use this outside a test box. ***\n\n");
}
