import type { Command } from "commander";
import type { AggregatorFlags } from "../../aggregator/index.js";
import { runUntilSignal } from "../action.js";
import { dataDirOption, nodeCapOptions, rebuildOptions, registryAccessOptions, threatOptions } from "../options.js";

export function registerAggregator(program: Command): void {
  const cmd = dataDirOption(program.command("aggregator").description("run the aggregator alone (the Kubernetes Deployment)"))
    .option("--listen <host:port>", "gRPC address (default: 0.0.0.0:7443)")
    .option("--http <host:port>", "/metrics, /healthz, /readyz (default: 0.0.0.0:9464)")
    .option("--tls-dir <dir>", "ca.crt, aggregator.crt, aggregator.key (default: <data-dir>/tls)")
    .option("--insecure", "no TLS (loud warning; tests only)")
    .option("--docker-socket <path>", "the local engine, the default builder (env DOCKER_HOST; default: /var/run/docker.sock)");
  registryAccessOptions(rebuildOptions(nodeCapOptions(threatOptions(cmd)))).action(runUntilSignal(async (o: AggregatorFlags) => (await import("../run-aggregator.js")).runAggregator(o)));
}
