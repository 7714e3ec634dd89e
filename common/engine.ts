/**
 * The connection to a Docker engine (the agent's local one; the aggregator's builder pool), with an error that tells a person how to start one.
 */
import Docker from "dockerode";
import { DEFAULT_DOCKER_SOCKET } from "./config.js";
import { Code, ShadowError, errnoCode } from "./errors.js";
import { withTimeout } from "./timeout.js";

export interface EngineInfo {
  version: string;
  apiVersion: string;
  driver: string;
  rootDir: string;
  cgroupVersion: string;
}

/** The socket to dial; the programs' configurations read --docker-socket and DOCKER_HOST into `explicit`. */
export function engineSocket(explicit?: string): string {
  return explicit !== undefined && explicit !== "" ? explicit : DEFAULT_DOCKER_SOCKET;
}

function unavailable(socket: string, err: unknown): ShadowError {
  const why = errnoCode(err) ?? (err instanceof Error ? err.message : String(err));
  return new ShadowError(
    Code.EngineUnavailable,
    `cannot reach the Docker engine at unix://${socket} (${why}). Start one with ` +
      "`bash test/harness/docker-host.sh` (installs docker.io if needed) or " +
      "`sudo dockerd --bridge=none --iptables=false --ip-masq=false`, or point --docker-socket / DOCKER_HOST at a running engine.",
    { cause: err },
  );
}

/** Connects and checks that the engine answers; throws EngineUnavailable with a how-to if not. */
export async function connectEngine(socket: string, timeoutMs = 5000): Promise<{ docker: Docker; events: Docker; info: EngineInfo }> {
  const docker = new Docker({ socketPath: socket, timeout: 30_000 });
  // The event stream is idle for as long as nothing happens: a request timeout would cut it
  // (and force a full resync) every 30 s. A lost engine still ends the stream (socket closed).
  const events = new Docker({ socketPath: socket });
  let raw: unknown;
  try {
    await withTimeout(docker.ping(), timeoutMs, "ping");
    raw = await withTimeout(docker.info(), timeoutMs, "info");
  } catch (err) {
    throw unavailable(socket, err);
  }
  const o = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
  const s = (k: string) => (typeof o[k] === "string" ? (o[k] as string) : "");
  const version = await docker.version().catch(() => ({ ApiVersion: "" }));
  return {
    docker,
    events,
    info: {
      version: s("ServerVersion"),
      apiVersion: typeof version.ApiVersion === "string" ? version.ApiVersion : "",
      driver: s("Driver"),
      rootDir: s("DockerRootDir"),
      cgroupVersion: s("CgroupVersion"),
    },
  };
}


/** True when a dockerode error is the engine's 404 (the container or image is gone). */
export function isEngineNotFound(err: unknown): boolean {
  return typeof err === "object" && err !== null && "statusCode" in err && (err as { statusCode: unknown }).statusCode === 404;
}
