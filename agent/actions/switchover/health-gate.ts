/**
 * Whether a just-started container is ready for traffic, within a deadline: its Docker
 * HEALTHCHECK when the image has one (wait for "healthy"), else a probe of its service port (TCP
 * connect, or an HTTP GET answered below 400), else (no service) running and not restarting for
 * a settle time. A container that stops meanwhile fails at once.
 */
import { request } from "node:http";
import { connect } from "node:net";
import type Docker from "dockerode";
import { Code, ShadowError } from "../../../common/errors.js";
import type { Backend } from "../traffic/traffic-redirect.js";
import type { HealthProbe } from "./managed-service.js";

export interface HealthGateOptions {
  deadlineMs: number;
  /** Without a service or a health check: how long it must stay running (default 1 s). */
  settleMs?: number;
  /** Between two checks (default 25 ms). */
  everyMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function hasHealthcheck(c: Docker.ContainerInspectInfo): boolean {
  const test = c.Config.Healthcheck?.Test;
  return Array.isArray(test) && test.length > 0 && test[0] !== "NONE";
}

/** One probe of the backend: resolves true when it answers as the probe wants. */
export function probe(backend: Backend, how: HealthProbe, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    if (how.kind === "tcp") {
      const s = connect({ host: backend.host, port: backend.port });
      const done = (ok: boolean) => {
        s.destroy();
        resolve(ok);
      };
      s.setTimeout(timeoutMs, () => done(false));
      s.once("connect", () => done(true)).once("error", () => done(false));
      return;
    }
    const req = request({ host: backend.host, port: backend.port, path: how.path, method: "GET", timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 500) < 400);
    });
    req.once("timeout", () => req.destroy()).once("error", () => resolve(false));
    req.end();
  });
}

/** Resolves when the container is ready; rejects (FailedPrecondition) with why when it is not by the deadline. */
export async function healthGate(docker: Docker, id: string, service: { backend: Backend; health: HealthProbe } | undefined, o: HealthGateOptions): Promise<string> {
  const end = Date.now() + o.deadlineMs;
  const every = o.everyMs ?? 25;
  let runningSince: number | undefined;
  let last = "not checked yet";
  for (;;) {
    const c = await docker.getContainer(id).inspect();
    if (!c.State.Running || c.State.Restarting) {
      if (c.State.Status !== "created") throw new ShadowError(Code.FailedPrecondition, `container ${c.Name.replace(/^\//, "")} is ${c.State.Status} (exit code ${c.State.ExitCode})`);
      runningSince = undefined;
      last = "not started";
    } else if (hasHealthcheck(c)) {
      const status = c.State.Health?.Status ?? "starting";
      if (status === "healthy") return "health check: healthy";
      if (status === "unhealthy") throw new ShadowError(Code.FailedPrecondition, `health check: unhealthy (${c.State.Health?.Log?.at(-1)?.Output?.trim().slice(0, 200) ?? ""})`);
      last = `health check: ${status}`;
    } else if (service !== undefined) {
      if (await probe(service.backend, service.health)) return `${service.health.kind} probe of ${service.backend.host}:${service.backend.port} answered`;
      last = `${service.health.kind} probe of ${service.backend.host}:${service.backend.port} not answered`;
    } else {
      runningSince ??= Date.now();
      if (Date.now() - runningSince >= (o.settleMs ?? 1000)) return "running";
      last = "running, settling";
    }
    if (Date.now() >= end) throw new ShadowError(Code.FailedPrecondition, `not ready within ${o.deadlineMs} ms: ${last}`);
    await sleep(every);
  }
}
