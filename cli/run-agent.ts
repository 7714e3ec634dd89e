/**
 * `shadowlayer agent`: a node agent alone (the Kubernetes DaemonSet). Imported by its command's
 * action only: it loads the agent.
 */
import { loadTls } from "../common/certs.js";
import { createLogger } from "../common/log.js";
import { resolveAgentConfig, startAgent, type AgentFlags } from "../agent/index.js";

export async function runAgent(flags: AgentFlags): Promise<() => Promise<void>> {
  const c = resolveAgentConfig(flags, process.env);
  const tls = c.insecure ? "insecure" : await loadTls(c.tlsDir, { role: "agent", node: c.agent.node });
  const agent = await startAgent({ ...c.agent, tls, log: createLogger("shadowlayer-agent", c.logLevel) });
  return () => agent.stop();
}
