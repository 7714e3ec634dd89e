import type { Command } from "commander";
import { action, out } from "../action.js";

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("start a small demo workload (web server, worker, volume writer) from locally built images")
    .option("--port <port>", "loopback port of the demo web server (default: 18080)")
    .option("--down", "remove the demo containers instead")
    .option("--docker-socket <path>", "Docker engine socket (env DOCKER_HOST; default: /var/run/docker.sock)")
    .action(action(async (o: { port?: string; down?: boolean; dockerSocket?: string }) => (await import("../demo.js")).runDemo(o, out)));
}
