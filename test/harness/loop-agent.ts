/**
 * The agent of an end-to-end loop test: a real agent beside an insecure loopback aggregator that
 * made its signing key in `<dir>/agg`, following the engine every second, exec events by /proc
 * polling (the loop tests look at commands and shadows, not at eBPF).
 */
import { join } from "node:path";
import type Docker from "dockerode";
import { SHADOW_CONTAINER_LABELS } from "../../agent/actions/shadow-containers.js";
import type { RunningAggregator } from "../../aggregator/index.js";
import { cleanupContainers } from "./engine.js";
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

/**
 * Ends a loop test: the agent, then the aggregator, the test's containers, the shadow containers
 * of `originalId` and the shadow images the rebuild jobs made.
 */
export async function stopLoop(docker: Docker, agent: RunningAgent | undefined, aggregator: RunningAggregator | undefined, originalId: string | undefined): Promise<void> {
  const shadows = new Set((aggregator?.rebuilds?.all() ?? []).map((j) => j.shadow?.imageId ?? "").filter((id) => id !== ""));
  await agent?.stop();
  await aggregator?.stop();
  await cleanupContainers(docker);
  const left = await docker.listContainers({ all: true, filters: { label: [SHADOW_CONTAINER_LABELS.shadowOf] } });
  for (const c of left) if (c.Labels[SHADOW_CONTAINER_LABELS.shadowOf] === originalId) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  for (const id of shadows) await docker.getImage(id).remove({ force: true }).catch(() => undefined);
}
