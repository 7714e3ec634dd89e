/**
 * The JSON-lines progress stream the engine answers builds, pulls, imports and loads with, read to
 * its end: an `error` line anywhere fails the whole operation with its message, and each build
 * output line can be passed on (the job's log tail).
 */
import type Docker from "dockerode";
import { Code, ShadowError } from "./errors.js";

export interface ProgressLine {
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

/** Resolves with every line once the stream ends; rejects with `code` and "<what> failed: …". */
export function followEngine(docker: Docker, stream: NodeJS.ReadableStream, what: string, code: Code, onLine?: (line: ProgressLine) => void): Promise<ProgressLine[]> {
  return new Promise<ProgressLine[]>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null, out: ProgressLine[]) => {
        const bad = out?.find((o) => o.error !== undefined || o.errorDetail !== undefined);
        if (err !== null) reject(new ShadowError(code, `${what} failed: ${err.message}`, { cause: err }));
        else if (bad !== undefined) reject(new ShadowError(code, `${what} failed: ${bad.error ?? bad.errorDetail?.message ?? "unknown"}`));
        else resolve(out ?? []);
      },
      onLine,
    );
  });
}
