import { pino, type Logger } from "pino";

export type { Logger };

/** Structured logs on stderr (stdout is for command output). Level from SHADOWLAYER_LOG_LEVEL. */
export function createLogger(name: string, level?: string): Logger {
  return pino(
    { name, level: level ?? process.env["SHADOWLAYER_LOG_LEVEL"] ?? "info", base: { name } },
    pino.destination(2),
  );
}

/** A logger that drops everything, for tests and benchmarks. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
