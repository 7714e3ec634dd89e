import { pino, type Logger } from "pino";

export type { Logger };

/** Structured logs on stderr (stdout is for command output), at the level the program's configuration chose. */
export function createLogger(name: string, level = "info"): Logger {
  return pino({ name, level, base: { name } }, pino.destination(2));
}

/** A logger that drops everything, for tests and benchmarks. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
