/**
 * The agent of an end-to-end loop test: a real agent beside an insecure loopback aggregator that
 * made its signing key in `<dir>/agg`, following the engine every second, exec events by /proc
 * polling (the loop tests look at commands and shadows, not at eBPF).
 */
import { join } from "node:path";
import { startAgent, type AgentOptions, type RunningAgent } from "../../agent/agent.js";
import { silentLogger } from "../../common/log.js";

export function startLoopAgent(dir: string, aggregatorPort: number, o: Partial<AgentOptions> & { node: string }): Promise<RunningAgent> {
  return startAgent({
    aggregator: `127.0.0.1:${aggregatorPort}`,
    tls: "insecure",
    dataDir: join(dir, "agent"),
    refreshMs: 1000,
    execSource: "proc",
    // The key the aggregator made for itself without TLS.
    signingKeyPub: join(dir, "agg", "signing", "cosign.pub"),
    log: silentLogger(),
    ...o,
  });
}
