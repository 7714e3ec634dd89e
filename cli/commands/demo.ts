import type { Command } from "commander";
import { connectEngine } from "../../common/engine.js";
import { action, out } from "../action.js";
import { resolveDemoConfig } from "../config.js";
import { removeDemo, startDemo } from "../demo.js";

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("start a small demo workload (web server, worker, volume writer) from locally built images")
    .option("--port <port>", "loopback port of the demo web server (default: 18080)")
    .option("--down", "remove the demo containers instead")
    .option("--docker-socket <path>", "Docker engine socket (env DOCKER_HOST; default: /var/run/docker.sock)")
    .action(action(demo));
}

async function demo(o: { port?: string; down?: boolean; dockerSocket?: string }): Promise<void> {
  const c = resolveDemoConfig(o, process.env);
  const { docker } = await connectEngine(c.dockerSocket);
  if (c.down) {
    out(`removed ${await removeDemo(docker)} demo containers`);
    return;
  }
  const started = await startDemo(docker, c.port, (m) => process.stderr.write(`${m}\n`), c.busybox);
  for (const s of started) out(`started ${s.name} (${s.id.slice(0, 12)}): ${s.what}`);
  out("see them with `shadowlayer containers` and `shadowlayer graph shadowlayer-demo-worker`; remove with `shadowlayer demo --down`");
}
