/**
 * `shadowlayer demo`: a small workload from the locally built images, all on loopback, so a
 * newcomer sees graphs at once: a web server, a worker run from a middle layer, a volume user;
 * and, with a real advisory loaded as a demo feed, the risk of the app's base and its rebuild.
 */
import type Docker from "dockerode";
import { connectEngine } from "../common/engine.js";
import { resolveDemoConfig } from "./config.js";
import { DEMO_ADVISORY, DEMO_CVE } from "./demo-advisories.js";
import { APP_IMAGE, BASE_IMAGE, DEMO_LABEL, FIXED_BASE_IMAGE, FIXED_LIBC, VULNERABLE_LIBC, ensureDemoImages } from "./demo-images.js";
import type { ClientFlags } from "./options.js";
import { SERVICE_LABELS, SERVICE_PORT_ENV } from "../agent/actions/switchover/service-labels.js";

/** The demo's bounded load: requests to the web service's stable address, 10 a second for 10 minutes. */
export const DEMO_LOAD = { name: "shadowlayer-demo-load", requests: 6000, everyS: 0.1 } as const;

/**
 * (This busybox's `wget -T` crashes, so the requests carry no timeout of their own; the proxy's hold is bounded.)
 * The load's script (busybox sh): once the stable address answers, one request at a time to it, each failure
 * printed at once, a summary every 100 requests and at the end; it stops by itself.
 */
export function demoLoadScript(url: string, requests: number, everyS: number): string {
  return [
    // The agent's proxy takes the stable address a moment after the web server starts: wait for it (up to a minute).
    "w=0",
    `until wget -q -O /dev/null ${url}; do w=$((w+1)); if [ "$w" -ge 600 ]; then echo "the service never answered at ${url}; is shadowlayer up running?"; exit 1; fi; sleep 0.1; done`,
    `echo "$(busybox date -u +%T) ${url} answers; starting the load"`,
    "i=0; ok=0; failed=0",
    `while [ "$i" -lt ${requests} ]; do`,
    `  if wget -q -O /dev/null ${url}; then ok=$((ok+1)); else failed=$((failed+1)); echo "$(busybox date -u +%T) request $i FAILED"; fi`,
    "  i=$((i+1))",
    `  if [ $((i % 100)) -eq 0 ]; then echo "$(busybox date -u +%T) $i requests: $ok ok, $failed failed"; fi`,
    `  sleep ${everyS}`,
    "done",
    `echo "$(busybox date -u +%T) done: $i requests, $ok ok, $failed failed"`,
  ].join("\n");
}

export interface DemoContainer {
  name: string;
  id: string;
  what: string;
}

export async function removeDemo(docker: Docker): Promise<number> {
  const list = await docker.listContainers({ all: true, filters: { label: [`${DEMO_LABEL}=demo`] } });
  await Promise.all(list.map((c) => docker.getContainer(c.Id).remove({ force: true, v: false })));
  return list.length;
}

export async function startDemo(docker: Docker, webPort: number, log: (m: string) => void, busybox?: string): Promise<DemoContainer[]> {
  await ensureDemoImages(docker, log, busybox);
  await removeDemo(docker);
  // The web server is a managed service: clients use the stable address (the agent's proxy), the
  // container listens on its own port, and a shadow of it will listen on the next one.
  const specs: Array<{ name: string; image: string; cmd: string[]; what: string; binds?: string[]; labels?: Record<string, string>; env?: string[] }> = [
    {
      name: "shadowlayer-demo-web",
      image: APP_IMAGE,
      cmd: ["/bin/sh", "-c", `exec /bin/busybox httpd -f -p 127.0.0.1:$${SERVICE_PORT_ENV} -h /srv/www`],
      what: `httpd behind the agent's proxy on http://127.0.0.1:${webPort}/ (itself on port ${webPort + 1}, its shadow on ${webPort + 2}; base layer executable)`,
      labels: { [SERVICE_LABELS.address]: `127.0.0.1:${webPort}`, [SERVICE_LABELS.port]: String(webPort + 1), [SERVICE_LABELS.shadowPort]: String(webPort + 2) },
      env: [`${SERVICE_PORT_ENV}=${webPort + 1}`],
    },
    {
      name: "shadowlayer-demo-worker",
      image: APP_IMAGE,
      cmd: ["/opt/app/bin/busybox", "sleep", "86400"],
      what: "worker run from the app's middle layer",
    },
    {
      name: "shadowlayer-demo-data",
      image: FIXED_BASE_IMAGE,
      cmd: ["/bin/sh", "-c", "while true; do date >> /data/log; sleep 5; done"],
      what: "writer with the named volume shadowlayer-demo-data at /data, on the fixed base",
      binds: ["shadowlayer-demo-data:/data"],
    },
    {
      name: DEMO_LOAD.name,
      image: FIXED_BASE_IMAGE,
      cmd: ["/bin/sh", "-c", demoLoadScript(`http://127.0.0.1:${webPort}/`, DEMO_LOAD.requests, DEMO_LOAD.everyS)],
      what: `bounded load: ${DEMO_LOAD.requests} requests to http://127.0.0.1:${webPort}/, ${1 / DEMO_LOAD.everyS} a second, then it stops; every failure is printed (\`docker logs ${DEMO_LOAD.name}\`)`,
    },
  ];
  const out: DemoContainer[] = [];
  for (const s of specs) {
    const c = await docker.createContainer({
      name: s.name,
      Image: s.image,
      Cmd: s.cmd,
      Labels: { ...s.labels, [DEMO_LABEL]: "demo" },
      ...(s.env ? { Env: s.env } : {}),
      // As PID 1 these ignore SIGTERM: a stop (by a switchover, once connections drained) kills after 2 s, not 10.
      StopTimeout: 2,
      HostConfig: { NetworkMode: "host", ...(s.binds ? { Binds: s.binds } : {}) },
    });
    await c.start();
    out.push({ name: s.name, id: c.id, what: s.what });
  }
  return out;
}

/** What the demo tells about its feed: loaded, or why not and how to load it. */
async function feedLines(flags: ClientFlags): Promise<string[]> {
  // The gRPC client and the records load only here: `demo --down` needs neither.
  const { DEMO_FEEDS, loadDemoFeed } = await import("./demo-feed.js");
  const names = `${DEMO_FEEDS.osv} and ${DEMO_FEEDS.kev}`;
  try {
    const { feeds, policy } = await loadDemoFeed(flags);
    const counts = feeds.map((f) => `${f.name} ${f.records} record(s)`).join(", ");
    return [
      `loaded the demo feeds (${counts}): ${DEMO_ADVISORY} and the KEV entry of ${DEMO_CVE}, real published records (a frozen copy), shown as (demo) in \`shadowlayer feeds\``,
      `${APP_IMAGE} is built on ${BASE_IMAGE} (libc6 ${VULNERABLE_LIBC}, affected by ${DEMO_CVE}); ${FIXED_BASE_IMAGE} has Debian's fix (${FIXED_LIBC})`,
      `policy ${policy.name} set for the demo's containers: rebuild at risk ${policy.rebuildThreshold}, switch at ${policy.switchThreshold} (the record has no CVSS score: an assumed 5.0 x KEV gives 45)`,
      `within about a minute: \`shadowlayer scores\` shows the risk of shadowlayer-demo-web and shadowlayer-demo-worker past ${policy.rebuildThreshold},`,
      `  \`shadowlayer rebuilds\` a \`rebase\` shadow of ${APP_IMAGE} onto ${FIXED_BASE_IMAGE} built, signed and prepared,`,
      `  and \`shadowlayer history\` both switched over to their shadows; the web server's traffic moved with no failed request (\`docker logs ${DEMO_LOAD.name}\`)`,
      "  `shadowlayer rollback shadowlayer-demo-web` brings the original back",
    ];
  } catch (err) {
    return [
      `the demo feeds (${names}) and policy could not be loaded: ${err instanceof Error ? err.message : String(err)}`,
      "  the containers run all the same; to load them, start `shadowlayer up` (on this host, with the same --data-dir) and run `shadowlayer demo` again",
    ];
  }
}

export type DemoFlags = ClientFlags & { port?: string; down?: boolean; dockerSocket?: string };

/** The `demo` command: starts the workload and loads its feed, or with --down removes the workload. Imported by its action only. */
export async function runDemo(flags: DemoFlags, out: (line: string) => void): Promise<void> {
  const c = resolveDemoConfig(flags, process.env);
  const { docker } = await connectEngine(c.dockerSocket);
  if (c.down) {
    out(`removed ${await removeDemo(docker)} demo containers (the demo feeds stay in the aggregator until it is given other data)`);
    return;
  }
  const started = await startDemo(docker, c.port, (m) => process.stderr.write(`${m}\n`), c.busybox);
  for (const s of started) out(`started ${s.name} (${s.id.slice(0, 12)}): ${s.what}`);
  for (const line of await feedLines(flags)) out(line);
  out("see them with `shadowlayer containers` and `shadowlayer graph shadowlayer-demo-worker`; remove with `shadowlayer demo --down`");
}
