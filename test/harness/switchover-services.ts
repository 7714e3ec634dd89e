/**
 * Managed services for the switchover tests: a busybox httpd (the demo app image) on a loopback
 * port given in SHADOWLAYER_PORT that answers with that port (so a body names who served), labelled
 * as a service; its shadow prepared as the agent prepares one, optionally with another command (a
 * shadow that never listens, or exits). Ports are checked free (bind, then close) in a range of their own.
 */
import { createServer } from "node:net";
import type Docker from "dockerode";
import { shadowCreateOptions, shadowName } from "../../agent/actions/shadow-containers.js";
import { SERVICE_LABELS, SERVICE_PORT_ENV } from "../../agent/actions/switchover/service-labels.js";
import { DEMO_LABEL } from "../../cli/demo-images.js";
import { TEST_LABEL } from "./engine.js";

/**
 * A free loopback port below the kernel's ephemeral range (32768+ here), so no outgoing connection
 * of a load generator can take it between the check and the service's bind. Ports handed out by
 * this process are not handed out again.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * 10_000);
    if (given.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) {
      given.add(port);
      return port;
    }
  }
}
const given = new Set<number>();

/** Serves / with its own port; cgi-bin/append appends the query string to /data/log and answers ok. */
export const HTTPD_COMMAND = [
  "sh",
  "-c",
  [
    "mkdir -p /w/cgi-bin",
    'echo "$SHADOWLAYER_PORT" > /w/index.html',
    `printf '#!/bin/sh\\necho "$QUERY_STRING" >> /data/log\\nprintf "Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nok\\\\n"\\n' > /w/cgi-bin/append`,
    "chmod 755 /w/cgi-bin/append",
    'exec httpd -f -p "127.0.0.1:$SHADOWLAYER_PORT" -h /w',
  ].join(" && "),
];

export interface TestService {
  address: string;
  listenPort: number;
  port: number;
  shadowPort: number;
  container: Docker.ContainerInspectInfo;
}

export interface ServiceOptions {
  name: string;
  labels?: Record<string, string>;
  binds?: string[];
  healthcheck?: Docker.HealthConfig;
  stopTimeout?: number;
  /** Called with the stable address before the container exists (a test binds its proxy there first). */
  beforeCreate?: (address: string) => Promise<void>;
}

export async function startService(docker: Docker, app: string, o: ServiceOptions): Promise<TestService> {
  const [listenPort, port, shadowPort] = [await freePort(), await freePort(), await freePort()];
  const address = `127.0.0.1:${listenPort}`;
  await o.beforeCreate?.(address);
  const c = await docker.createContainer({
    name: o.name,
    Image: app,
    Cmd: HTTPD_COMMAND,
    Env: [`${SERVICE_PORT_ENV}=${port}`],
    Labels: {
      [SERVICE_LABELS.address]: address,
      [SERVICE_LABELS.port]: String(port),
      [SERVICE_LABELS.shadowPort]: String(shadowPort),
      ...o.labels,
      [TEST_LABEL]: String(process.pid),
      [DEMO_LABEL]: "test",
    },
    ...(o.healthcheck !== undefined ? { Healthcheck: o.healthcheck } : {}),
    StopTimeout: o.stopTimeout ?? 1,
    HostConfig: { NetworkMode: "host", ...(o.binds !== undefined ? { Binds: o.binds } : {}) },
  });
  await c.start();
  return { address, listenPort, port, shadowPort, container: await c.inspect() };
}

/** A prepared (created, not started) shadow of `original`, as the agent makes one; `cmd` replaces its command. */
export async function prepareTestShadow(docker: Docker, original: Docker.ContainerInspectInfo, app: string, cmd?: string[], suffix = ""): Promise<string> {
  const opts = shadowCreateOptions(original, await docker.getImage(app).inspect(), { image: app, reference: app, job: "test-job" });
  const c = await docker.createContainer({ ...opts, ...(cmd !== undefined ? { Cmd: cmd } : {}), name: `${shadowName(original.Name.replace(/^\//, ""), original.Id)}${suffix}` });
  return c.id;
}

/** Removes the snapshot images the switchovers of this process's containers made. */
export async function removeSnapshots(docker: Docker, originals: string[]): Promise<void> {
  for (const id of originals) {
    const images = await docker.listImages({ filters: { label: [`shadowlayer.snapshot-of=${id}`] } });
    for (const i of images) await docker.getImage(i.Id).remove({ force: true }).catch(() => undefined);
  }
}
