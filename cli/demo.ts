/**
 * `shadowlayer demo`: a small workload from the locally built images, all on loopback, so a
 * newcomer sees graphs at once: a web server, a worker run from a middle layer, a volume user.
 */
import type Docker from "dockerode";
import { connectEngine } from "../common/engine.js";
import { resolveDemoConfig } from "./config.js";
import { APP_IMAGE, BASE_IMAGE, DEMO_LABEL, ensureDemoImages } from "./demo-images.js";

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
      image: BASE_IMAGE,
      cmd: ["/bin/sh", "-c", "while true; do date >> /data/log; sleep 5; done"],
      what: "writer with the named volume shadowlayer-demo-data at /data",
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

/** The `demo` command: starts the workload, or with --down removes it. Imported by its action only. */
export async function runDemo(flags: { port?: string; down?: boolean; dockerSocket?: string }, out: (line: string) => void): Promise<void> {
  const c = resolveDemoConfig(flags, process.env);
  const { docker } = await connectEngine(c.dockerSocket);
  if (c.down) {
    out(`removed ${await removeDemo(docker)} demo containers`);
    return;
  }
  const started = await startDemo(docker, c.port, (m) => process.stderr.write(`${m}\n`), c.busybox);
  for (const s of started) out(`started ${s.name} (${s.id.slice(0, 12)}): ${s.what}`);
  out("see them with `shadowlayer containers` and `shadowlayer graph shadowlayer-demo-worker`; remove with `shadowlayer demo --down`");
}
