/**
 * `shadowlayer aggregator`: the aggregator alone (the Kubernetes Deployment). Imported by its
 * command's action only: it loads the aggregator.
 */
import { loadTls } from "../common/certs.js";
import { createLogger } from "../common/log.js";
import { resolveAggregatorConfig, startAggregator, type AggregatorFlags } from "../aggregator/index.js";
import { readPolicyFile } from "./policy-input.js";

export async function runAggregator(flags: AggregatorFlags): Promise<() => Promise<void>> {
  const c = resolveAggregatorConfig(flags, process.env);
  const policies = c.policiesFile === undefined ? undefined : readPolicyFile(c.policiesFile);
  const tls = c.insecure ? "insecure" : await loadTls(c.tlsDir, { role: "aggregator" });
  const aggregator = await startAggregator({ ...c.aggregator, tls, log: createLogger("shadowlayer-aggregator", c.logLevel), ...(policies !== undefined ? { policies } : {}) });
  return () => aggregator.stop();
}
