/**
 * The ways to replace a service that the switchover is measured against, each serving directly
 * on the stable address (host network, no proxy): `docker restart` of the container, and `docker
 * stop` + `docker run` of the other image. Both go through the engine's API (what the CLI sends,
 * without its process start), with the engine's init as PID 1 so httpd ends on SIGTERM as a
 * well-behaved service does, rather than each stop waiting out its grace period.
 */
import type Docker from "dockerode";
import { DEMO_LABEL } from "../../cli/demo-images.js";
import { SERVICE_PORT_ENV } from "../../agent/actions/switchover/service-labels.js";
import { TEST_LABEL } from "../harness/engine.js";

/** One scenario: a service on `port` that `replace()` replaces by a new start. */
export interface Replaceable {
  readonly name: string;
  readonly port: number;
  /** Issues the replacement; resolves once the command has returned. */
  replace(): Promise<void>;
  /** After the new start served: waits until the replacement is over and tidies up, off the clock. */
  settle(): Promise<void>;
  /** Removes everything the scenario made (never rejects). */
  close(): Promise<void>;
}

/** A host-network service container on `port` (created and started), labelled for cleanup. */
export async function runService(docker: Docker, image: string, port: number, name: string, labels: Record<string, string> = {}, env: string[] = []): Promise<Docker.Container> {
  const c = await docker.createContainer({
    name,
    Image: image,
    Env: [`${SERVICE_PORT_ENV}=${port}`, ...env],
    Labels: { ...labels, [TEST_LABEL]: String(process.pid), [DEMO_LABEL]: "test" },
    HostConfig: { NetworkMode: "host", Init: true },
  });
  await c.start();
  return c;
}

/** Seconds `docker stop` and `docker restart` give the process before SIGKILL (the CLI's default). */
const STOP_GRACE_S = 10;

export async function dockerRestart(docker: Docker, image: string, port: number): Promise<Replaceable> {
  const c = await runService(docker, image, port, `sl-bench-restart-${process.pid}`);
  return {
    name: "docker_restart",
    port,
    replace: () => c.restart({ t: STOP_GRACE_S }).then(() => undefined),
    settle: () => Promise.resolve(),
    close: () => c.remove({ force: true }).catch(() => undefined),
  };
}

/** `docker stop` of the running one, then `docker run` of the other image (a new name each time; the old one removed off the clock). */
export async function stopRun(docker: Docker, images: readonly [string, string], port: number): Promise<Replaceable> {
  let n = 0;
  const made: Docker.Container[] = [];
  const name = () => `sl-bench-stoprun-${process.pid}-${n}`;
  let current = await runService(docker, images[0], port, name());
  made.push(current);
  let old: Docker.Container | undefined;
  return {
    name: "stop_run",
    port,
    replace: async () => {
      old = current;
      await old.stop({ t: STOP_GRACE_S });
      n++;
      current = await runService(docker, images[n % 2]!, port, name());
      made.push(current);
    },
    settle: async () => {
      await old?.remove({ force: true }).catch(() => undefined);
      old = undefined;
    },
    close: async () => {
      for (const c of made) await c.remove({ force: true }).catch(() => undefined);
    },
  };
}
