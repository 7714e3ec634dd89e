import type { Command } from "commander";
import { out, runUntilSignal } from "../action.js";
import { agentOptions, dataDirOption, nodeCapOptions, rebuildOptions, threatOptions } from "../options.js";
import type { UpFlags } from "../run-up.js";
import { falcoOptions } from "./aggregator.js";

export function registerUp(program: Command): void {
  const cmd = dataDirOption(program.command("up").description("run the aggregator and an agent on this host against the local Docker engine (the embedded default)"))
    .option("--listen <host:port>", "gRPC address of the aggregator (default: 127.0.0.1:7443)")
    .option("--http <host:port>", "aggregator /metrics, /healthz, /readyz (default: 127.0.0.1:9464)")
    .option("--agent-http <host:port>", "agent /metrics, /healthz, /readyz (default: 127.0.0.1:9465)");
  falcoOptions(rebuildOptions(nodeCapOptions(threatOptions(agentOptions(cmd)))), "; default with --falco-listen and no --falco-mtls: <data-dir>/falco.token, made on first start")
    .option("--insecure", "no TLS between agent and aggregator (loud warning; tests only)")
    .option("--json", "one JSON line per change instead of trees")
    .option("--quiet", "do not print changes")
    .action(
      runUntilSignal(async (o: UpFlags) => {
        const { resolveUpConfig, runUp } = await import("../run-up.js");
        return runUp(resolveUpConfig(o, process.env), out);
      }),
    );
}
