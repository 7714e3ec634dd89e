import type { Command } from "commander";
import type { AggregatorFlags } from "../../aggregator/index.js";
import { runUntilSignal } from "../action.js";
import { dataDirOption, nodeCapOptions, rebuildOptions, registryAccessOptions, threatOptions } from "../options.js";

/** The Falco alert intake's flags, shared with `up` (which says where it makes a token when none is given). */
export function falcoOptions(cmd: Command, tokenDefault = ""): Command {
  return cmd
    .option("--falco-listen <host:port>", "take Falco alerts (http_output, falcosidekick webhook) over HTTPS here, path /v1/falco (env SHADOWLAYER_FALCO_LISTEN; default: off; loopback only with --insecure)")
    .option("--falco-token-file <file>", "a file holding the token the intake takes as `Authorization: Bearer` or as the Basic password (env SHADOWLAYER_FALCO_TOKEN_FILE${tokenDefault})")
    .option("--falco-mtls", "admit client certificates of the shadowlayer CA with a detector or admin role (`certs init --detector`; env SHADOWLAYER_FALCO_MTLS=true)")
    .option("--falco-rule <rule...>", "switch only on these rules: an exact name or /regex/flags; repeatable (default: every rule)")
    .option("--falco-min-priority <priority>", "switch only on alerts of this priority or above: emergency, alert, critical, error, warning, notice, informational, debug (env SHADOWLAYER_FALCO_MIN_PRIORITY; default: warning)");
}

export function registerAggregator(program: Command): void {
  const cmd = dataDirOption(program.command("aggregator").description("run the aggregator alone (the Kubernetes Deployment)"))
    .option("--listen <host:port>", "gRPC address (default: 0.0.0.0:7443)")
    .option("--http <host:port>", "/metrics, /healthz, /readyz (default: 0.0.0.0:9464)")
    .option("--tls-dir <dir>", "ca.crt, aggregator.crt, aggregator.key (default: <data-dir>/tls)")
    .option("--insecure", "no TLS (loud warning; tests only)")
    .option("--docker-socket <path>", "the local engine, the default builder (env DOCKER_HOST; default: /var/run/docker.sock)");
  falcoOptions(registryAccessOptions(rebuildOptions(nodeCapOptions(threatOptions(cmd))))).action(runUntilSignal(async (o: AggregatorFlags) => (await import("../run-aggregator.js")).runAggregator(o)));
}
