/**
 * The aggregator program's configuration (`shadowlayer aggregator`, and the aggregator half of
 * `up`): flags → environment → defaults, merged and checked here and nowhere else.
 */
import { join } from "node:path";
import { z } from "zod";
import { tlsFiles } from "../common/certs.js";
import type { AggregatorOptions } from "./server.js";
import { parseFeedFlags } from "./feeds/feed-config.js";
import { DEFAULT_NODE_CAPS } from "./ingest/node-caps.js";
import { DEFAULT_SHADOWS_KEPT } from "./rebuild/shadow-gc.js";
import { checkPackageMirror, checkRegistry, parseBaseMap } from "./rebuild/rebuild-options.js";
import { PROGRAM_SHAPE, PROGRAM_SOURCES, SHARED, hostPort, httpAddress, loopbackWhenInsecure, path, programSettings, resolveSettings, wholeNumber, type Env, type ProgramSettings } from "../common/config.js";

const MIB = 1024 * 1024;

const schema = z.object({
  ...PROGRAM_SHAPE,
  listen: hostPort.default("0.0.0.0:7443"),
  http: httpAddress.default("0.0.0.0:9464"),
  feed: z.array(z.string()).default([]),
  policies: path.optional(),
  maxContainersPerNode: wholeNumber.min(1, { error: "expected a whole number of at least 1" }).default(DEFAULT_NODE_CAPS.maxContainers),
  maxGraphMbPerNode: wholeNumber.min(1, { error: "expected a whole number of MiB, at least 1" }).default(DEFAULT_NODE_CAPS.maxGraphBytes / MIB),
  dockerSocket: SHARED.dockerSocket.schema,
  rebuilds: z.enum(["on", "off"], { error: "expected on or off" }).default("on"),
  builder: z.array(z.string()).default([]),
  registry: z.string().min(1).optional(),
  registryCa: path.optional(),
  registryAuth: path.optional(),
  recipeRoot: z.array(z.string()).default([]),
  packageMirror: z.string().min(1).optional(),
  baseMap: z.array(z.string()).default([]),
  shadowsKeep: wholeNumber.min(1, { error: "expected a whole number of at least 1" }).default(DEFAULT_SHADOWS_KEPT),
  signingKey: path.optional(),
}).superRefine(loopbackWhenInsecure("listen", "http"));

const SOURCES = {
  ...PROGRAM_SOURCES,
  maxContainersPerNode: { env: "SHADOWLAYER_MAX_CONTAINERS_PER_NODE" },
  maxGraphMbPerNode: { env: "SHADOWLAYER_MAX_GRAPH_MB_PER_NODE" },
  dockerSocket: SHARED.dockerSocket.source,
  registry: { env: "SHADOWLAYER_REGISTRY" },
  registryAuth: { env: "SHADOWLAYER_REGISTRY_AUTH" },
  registryCa: { env: "SHADOWLAYER_REGISTRY_CA" },
  packageMirror: { env: "SHADOWLAYER_PACKAGE_MIRROR" },
};

/** The aggregator's flags as commander hands them over. */
export type AggregatorFlags = { [K in keyof z.input<typeof schema>]?: string | boolean | string[] | undefined };

export interface AggregatorConfig extends ProgramSettings {
  /** What startAggregator takes but the logger, the TLS material and the policies. */
  aggregator: Omit<AggregatorOptions, "log" | "tls" | "policies">;
  /** A JSON array of policies to seed, read by the caller through the policy schema. */
  policiesFile?: string;
}

export function resolveAggregatorConfig(flags: AggregatorFlags, env: Env): AggregatorConfig {
  const s = resolveSettings(schema, flags, env, SOURCES);
  const program = programSettings(s);
  // Shadows are signed with the key `certs init` keeps beside the TLS material; without TLS the
  // rebuild stage makes one in the data dir.
  const signingKey = s.signingKey ?? (program.insecure ? undefined : join(program.tlsDir, tlsFiles.signingKey));
  return {
    aggregator: {
      dataDir: s.dataDir,
      listen: s.listen,
      http: s.http,
      feeds: parseFeedFlags(s.feed),
      caps: { maxContainers: s.maxContainersPerNode, maxGraphBytes: s.maxGraphMbPerNode * MIB },
      rebuild: {
        enabled: s.rebuilds === "on",
        builders: s.builder,
        dockerSocket: s.dockerSocket,
        ...(s.registry !== undefined ? { registry: checkRegistry(s.registry) } : {}),
        ...(s.registryCa !== undefined ? { registryCa: s.registryCa } : {}),
        ...(s.registryAuth !== undefined ? { registryAuth: s.registryAuth } : {}),
        recipeRoots: s.recipeRoot,
        ...(s.packageMirror !== undefined ? { packageMirror: checkPackageMirror(s.packageMirror) } : {}),
        baseMap: parseBaseMap(s.baseMap),
        keep: s.shadowsKeep,
        ...(signingKey !== undefined ? { signingKey } : {}),
      },
    },
    ...(s.policies !== undefined ? { policiesFile: s.policies } : {}),
    ...program,
  };
}
