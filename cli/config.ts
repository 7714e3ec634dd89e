/**
 * The CLI's own configuration and inputs: how client commands reach the aggregator, `certs init`,
 * `demo`, and the flags of `detections` and `policy set`; flags → environment → defaults, merged
 * and checked here. (`agent`, `aggregator` and `up` use the agent's and aggregator's own.)
 */
import { hostname } from "node:os";
import { z } from "zod";
import { SHARED, aNumber, hostPort, nodeName, path, positiveNumber, resolveSettings, tlsDirOf, wholeNumber, type Env } from "../common/config.js";
import type { ClientFlags } from "./options.js";

export interface ClientConfig {
  dataDir: string;
  /** Absent: the address `up` wrote in the data dir. */
  aggregator?: string;
  tlsDir: string;
  insecure: boolean;
}

const client = z.object({
  dataDir: SHARED.dataDir.schema,
  aggregator: hostPort.optional(),
  tlsDir: path.optional(),
  insecure: z.boolean().default(false),
});

export function resolveClientConfig(flags: ClientFlags, env: Env): ClientConfig {
  const s = resolveSettings(client, flags, env, { dataDir: SHARED.dataDir.source });
  return { dataDir: s.dataDir, ...(s.aggregator !== undefined ? { aggregator: s.aggregator } : {}), tlsDir: s.tlsDir ?? tlsDirOf(s.dataDir), insecure: s.insecure };
}

const certs = z.object({
  dataDir: SHARED.dataDir.schema,
  tlsDir: path.optional(),
  // --node takes several names; SHADOWLAYER_NODE names one.
  node: z.preprocess((v) => (typeof v === "string" ? [v] : v), z.array(nodeName)).default(() => [hostname()]),
  san: z.array(z.string().min(1, { error: "expected a DNS name or IP" })).default([]),
});

export function resolveCertsConfig(flags: { dataDir?: string; tlsDir?: string; node?: string[]; san?: string[] }, env: Env): { tlsDir: string; nodes: string[]; sans: string[] } {
  const s = resolveSettings(certs, flags, env, { dataDir: SHARED.dataDir.source, node: SHARED.node.source });
  return { tlsDir: s.tlsDir ?? tlsDirOf(s.dataDir), nodes: s.node, sans: s.san };
}

const demo = z.object({
  port: wholeNumber.min(1, { error: "expected a port (1-65535)" }).max(65535, { error: "expected a port (1-65535)" }).default(18080),
  down: z.boolean().default(false),
  dockerSocket: SHARED.dockerSocket.schema,
  busybox: path.optional(),
});

export function resolveDemoConfig(flags: { port?: string; down?: boolean; dockerSocket?: string }, env: Env): { port: number; down: boolean; dockerSocket: string; busybox?: string } {
  const s = resolveSettings(demo, flags, env, { dockerSocket: SHARED.dockerSocket.source, busybox: { env: "SHADOWLAYER_BUSYBOX" } });
  return { port: s.port, down: s.down, dockerSocket: s.dockerSocket, ...(s.busybox !== undefined ? { busybox: s.busybox } : {}) };
}

/** `detections --limit`: the newest n. */
export function resolveLimit(flags: { limit?: string }): number {
  return Math.floor(resolveSettings(z.object({ limit: positiveNumber.default(100) }), flags, {}).limit);
}

const policySet = z.object({
  rebuild: aNumber,
  switch: aNumber,
  order: wholeNumber.default(100),
  label: z.array(z.string().regex(/^[^=]+=/, { error: "expected key=value" })).default([]),
  namespace: z.string().optional(),
});

/** `policy set`'s flags as a policy's JSON fields; the aggregator's policy schema checks the policy itself. */
export function policySetInput(
  name: string,
  flags: { rebuild?: string; switch?: string; order?: string; label?: string[]; namespace?: string },
): { name: string; labels: Record<string, string>; namespace?: string; rebuild_threshold: number; switch_threshold: number; order: number } {
  const s = resolveSettings(policySet, flags, {});
  const labels = Object.fromEntries(s.label.map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
  return { name, labels, ...(s.namespace !== undefined ? { namespace: s.namespace } : {}), rebuild_threshold: s.rebuild, switch_threshold: s.switch, order: s.order };
}
