/**
 * The agent program's configuration (`shadowlayer agent`, and the agent half of `up`): flags →
 * environment → defaults, merged and checked here and nowhere else. Imports no agent runtime.
 */
import { join } from "node:path";
import { z } from "zod";
import type { AgentOptions } from "./agent.js";
import { DEFAULT_INVENTORY_BUDGET } from "./inventory/inventory-budget.js";
import { RUNTIME_CHOICES } from "./runtime/runtime.js";
import { PROGRAM_SHAPE, PROGRAM_SOURCES, SHARED, hostPort, httpAddress, loopbackWhenInsecure, path, positiveNumber, programSettings, resolveSettings, wholeNumber, type Env, type ProgramSettings, type Source } from "../common/config.js";

const EXEC_SOURCES = ["auto", "ebpf", "proc"] as const;
/** Where containerd listens on a plain node (k3s and RKE2: /run/k3s/containerd/containerd.sock). */
const CONTAINERD_SOCKET = "/run/containerd/containerd.sock";
const ANOMALY_BACKENDS = ["auto", "wasm", "cpu", "node"] as const;

/** A duration: milliseconds as a bare number, or with a unit (`500ms`, `30s`, `2m`, `1h`). */
const duration = z
  .union([z.number(), z.string()])
  .transform((v, ctx) => {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(String(v));
    if (m === null || Number(m[1]) <= 0) {
      ctx.addIssue({ code: "custom", message: "expected a duration: milliseconds, or a number with ms, s, m or h" });
      return z.NEVER;
    }
    return Number(m[1]) * (m[2] === "s" ? 1000 : m[2] === "m" ? 60_000 : m[2] === "h" ? 3_600_000 : 1);
  });

const schema = z.object({
  ...PROGRAM_SHAPE,
  node: SHARED.node.schema,
  aggregator: hostPort.optional(),
  runtime: z.enum(RUNTIME_CHOICES, { error: `expected one of ${RUNTIME_CHOICES.join(", ")}` }).default("auto"),
  dockerSocket: SHARED.dockerSocket.schema,
  dockerRoot: path.optional(),
  containerdSocket: path.default(CONTAINERD_SOCKET),
  containerdNamespace: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/, { error: "expected a containerd namespace (letters, digits, . _ -)" })
    .default("k8s.io"),
  containerdSnapshots: path.optional(),
  procRoot: path.default("/proc"),
  cgroupRoot: path.default("/sys/fs/cgroup"),
  http: httpAddress.default("127.0.0.1:9465"),
  refreshMs: positiveNumber.default(2000),
  sampleMs: positiveNumber.default(1000),
  window: positiveNumber.default(10),
  execSource: z.enum(EXEC_SOURCES, { error: `expected one of ${EXEC_SOURCES.join(", ")}` }).default("auto"),
  bpftrace: path.optional(),
  spoolMax: positiveNumber.default(100_000),
  inventoryBudgetMs: positiveNumber.default(DEFAULT_INVENTORY_BUDGET.maxMs),
  inventoryBudgetEntries: positiveNumber.default(DEFAULT_INVENTORY_BUDGET.maxEntries),
  inventoryBudgetMb: positiveNumber.default(DEFAULT_INVENTORY_BUDGET.maxBytes / (1024 * 1024)),
  signingKeyPub: path.optional(),
  registryAuth: path.optional(),
  registryCa: path.optional(),
  switchObserve: duration.optional(),
  switchHealthTimeout: duration.optional(),
  switchDrainTimeout: duration.optional(),
  anomaly: z.enum(["on", "off"], { error: "expected on or off" }).default("on"),
  anomalyWarmup: duration.default(30 * 60_000),
  anomalyMinWindows: wholeNumber.min(1, { error: "expected at least 1" }).default(200),
  anomalyWorkers: wholeNumber.min(1, { error: "expected at least 1" }).max(16, { error: "expected at most 16" }).default(1),
  anomalyBackend: z.enum(ANOMALY_BACKENDS, { error: `expected one of ${ANOMALY_BACKENDS.join(", ")}` }).default("auto"),
}).superRefine(loopbackWhenInsecure("http"));

type Key = keyof z.input<typeof schema>;

/** The settings a variable can give too; every setting's flag is its name in kebab case. */
const SOURCES: Partial<Record<Key, Source>> = {
  ...PROGRAM_SOURCES,
  node: SHARED.node.source,
  aggregator: { env: "SHADOWLAYER_AGGREGATOR" },
  dockerSocket: SHARED.dockerSocket.source,
  runtime: { env: "SHADOWLAYER_RUNTIME" },
  containerdSocket: { env: "CONTAINERD_ADDRESS" },
  containerdNamespace: { env: "CONTAINERD_NAMESPACE" },
};

/** The agent's flags as commander hands them over (text, or true for a switch). */
export type AgentFlags = { [K in Key]?: string | boolean | undefined };

export interface AgentConfig extends ProgramSettings {
  /** What startAgent takes but the logger and the TLS material. */
  agent: Omit<AgentOptions, "log" | "tls"> & { node: string; dataDir: string };
}

/**
 * Resolves the agent's configuration. `rename` lets a program that embeds the agent (`up`) name its
 * own flag for a setting (`--agent-http`) or read a setting from nowhere (`aggregator: {}`).
 */
export function resolveAgentConfig(flags: AgentFlags, env: Env, rename: Partial<Record<Key, Source>> = {}): AgentConfig {
  const s = resolveSettings(schema, flags, env, { ...SOURCES, ...rename });
  const program = programSettings(s);
  // The aggregator's public key beside the certificates (common/certs.ts tlsFiles.signingPub); none when insecure.
  const switchBounds = {
    ...(s.switchObserve !== undefined ? { observeMs: s.switchObserve } : {}),
    ...(s.switchHealthTimeout !== undefined ? { healthTimeoutMs: s.switchHealthTimeout } : {}),
    ...(s.switchDrainTimeout !== undefined ? { drainTimeoutMs: s.switchDrainTimeout } : {}),
  };
  const signingKeyPub = s.signingKeyPub ?? (s.insecure ? undefined : join(program.tlsDir, "cosign.pub"));
  return {
    agent: {
      node: s.node,
      dataDir: s.dataDir,
      runtime: s.runtime,
      dockerSocket: s.dockerSocket,
      containerdSocket: s.containerdSocket,
      containerdNamespace: s.containerdNamespace,
      procRoot: s.procRoot,
      cgroupRoot: s.cgroupRoot,
      http: s.http,
      refreshMs: s.refreshMs,
      sampleMs: s.sampleMs,
      windowMs: s.window * 1000,
      execSource: s.execSource,
      spoolMax: Math.floor(s.spoolMax),
      anomaly: {
        enabled: s.anomaly === "on",
        warmupMs: s.anomalyWarmup,
        minWindows: s.anomalyMinWindows,
        workers: s.anomalyWorkers,
        backend: s.anomalyBackend,
      },
      inventoryBudget: { maxMs: s.inventoryBudgetMs, maxEntries: Math.floor(s.inventoryBudgetEntries), maxBytes: Math.floor(s.inventoryBudgetMb * 1024 * 1024) },
      ...(s.aggregator !== undefined ? { aggregator: s.aggregator } : {}),
      ...(s.dockerRoot !== undefined ? { dockerRoot: s.dockerRoot } : {}),
      ...(s.containerdSnapshots !== undefined ? { containerdSnapshots: s.containerdSnapshots } : {}),
      ...(s.bpftrace !== undefined ? { bpftrace: s.bpftrace } : {}),
      ...(signingKeyPub !== undefined ? { signingKeyPub } : {}),
      ...(s.registryAuth !== undefined ? { registryAuth: s.registryAuth } : {}),
      ...(s.registryCa !== undefined ? { registryCa: s.registryCa } : {}),
      ...(Object.keys(switchBounds).length > 0 ? { switchBounds } : {}),
    },
    ...program,
  };
}
