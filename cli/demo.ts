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
  const specs: Array<{ name: string; image: string; cmd: string[]; what: string; binds?: string[] }> = [
    {
      name: "shadowlayer-demo-web",
      image: APP_IMAGE,
      cmd: ["/bin/busybox", "httpd", "-f", "-p", `127.0.0.1:${webPort}`, "-h", "/srv/www"],
      what: `httpd on http://127.0.0.1:${webPort}/ (base layer executable)`,
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
  ];
  const out: DemoContainer[] = [];
  for (const s of specs) {
    const c = await docker.createContainer({
      name: s.name,
      Image: s.image,
      Cmd: s.cmd,
      Labels: { [DEMO_LABEL]: "demo" },
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
      `policy ${policy.name} set for the demo's containers: rebuild at risk ${policy.rebuildThreshold} (the record has no CVSS score: an assumed 5.0 x KEV gives 45)`,
      `within about a minute: \`shadowlayer scores\` shows the risk of shadowlayer-demo-web and shadowlayer-demo-worker past ${policy.rebuildThreshold},`,
      `  and \`shadowlayer rebuilds\` a \`rebase\` shadow of ${APP_IMAGE} onto ${FIXED_BASE_IMAGE} built, signed and prepared`,
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
