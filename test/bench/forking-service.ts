/**
 * The churn workload: a busybox httpd (host network, its own loopback port) forks one child per
 * connection, so a client making N connections per second makes N new processes per second in
 * that container. The client here is bounded in count and in time and stops by itself.
 */
import { connect } from "node:net";
import type Docker from "dockerode";
import { runContainer, waitFor, type TestEngine } from "../harness/engine.js";
import { freePort } from "./cli-process.js";

export interface ForkingService {
  readonly container: Docker.Container;
  readonly port: number;
}

/** One GET over a fresh connection; resolves true on a 200 reply, false on anything else. */
export function oneRequest(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let reply = "";
    const s = connect({ host: "127.0.0.1", port }, () => s.end("GET / HTTP/1.0\r\n\r\n"));
    s.setTimeout(timeoutMs, () => s.destroy());
    s.on("data", (d: Buffer) => {
      if (reply.length < 64) reply += d.toString("latin1");
    });
    s.on("error", () => undefined);
    s.on("close", () => resolve(reply.startsWith("HTTP/1.") && reply.slice(9, 12) === "200"));
  });
}

/**
 * Starts the service from the demo's app image (it holds /srv/www) and waits until it answers.
 * `stopAfterS` bounds the container's own life: busybox `timeout` ends httpd by itself.
 */
export async function startForkingService(eng: TestEngine, stopAfterS: number, name?: string): Promise<ForkingService> {
  const port = await freePort();
  const cmd = ["/bin/busybox", "timeout", String(Math.ceil(stopAfterS)), "/bin/busybox", "httpd", "-f", "-p", `127.0.0.1:${port}`, "-h", "/srv/www"];
  const container = await runContainer(eng.docker, eng.app, cmd, name !== undefined ? { name } : {});
  await waitFor("the forking service to answer", async () => ((await oneRequest(port, 1_000)) ? true : undefined), 30_000, 200);
  return { container, port };
}

export interface LoadResult {
  /** Connections that got a 200 reply (each one a process forked by the service). */
  ok: number;
  failed: number;
  seconds: number;
}

/**
 * Opens `perSecond` connections a second to `port` for at most `seconds` (and at most
 * perSecond x seconds in all), keeping at most `maxInFlight` open; stops early when `signal`
 * aborts. Waits for the ones in flight before resolving.
 */
export async function driveLoad(port: number, perSecond: number, seconds: number, maxInFlight = 64, signal?: AbortSignal): Promise<LoadResult> {
  const total = Math.round(perSecond * seconds);
  const t0 = Date.now();
  let started = 0;
  let inFlight = 0;
  const out: LoadResult = { ok: 0, failed: 0, seconds: 0 };
  const pending = new Set<Promise<void>>();
  while (started < total && Date.now() - t0 < seconds * 1000 && signal?.aborted !== true) {
    const due = Math.min(total, Math.floor(((Date.now() - t0) / 1000) * perSecond));
    while (started < due && inFlight < maxInFlight) {
      started++;
      inFlight++;
      const p: Promise<void> = oneRequest(port, 5_000).then((ok) => {
        if (ok) out.ok++;
        else out.failed++;
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  out.seconds = (Date.now() - t0) / 1000;
  await Promise.all(pending);
  return out;
}
