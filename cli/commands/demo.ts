import type { Command } from "commander";
import { action, out } from "../action.js";
import { clientOptions } from "../options.js";
import type { DemoFlags } from "../demo.js";

export function registerDemo(program: Command): void {
  clientOptions(
    program
      .command("demo")
      .description("start a small demo workload (web server, worker, volume writer) from locally built images, and load a real advisory that affects its base as a demo feed (needs the admin certificate)"),
  )
    .option("--port <port>", "loopback port of the demo web server (default: 18080)")
    .option("--down", "remove the demo containers instead")
    .option("--docker-socket <path>", "Docker engine socket (env DOCKER_HOST; default: /var/run/docker.sock)")
    .action(action(async (o: DemoFlags) => (await import("../demo.js")).runDemo(o, out)));
}
