/**
 * The aggregator program's configuration (`shadowlayer aggregator`, and the aggregator half of
 * `up`): flags → environment → defaults, merged and checked here and nowhere else.
 */
import { z } from "zod";
import type { AggregatorOptions } from "./server.js";
import { parseFeedFlags } from "./feeds/feed-config.js";
import { DEFAULT_NODE_CAPS } from "./ingest/node-caps.js";
import { PROGRAM_SHAPE, PROGRAM_SOURCES, hostPort, httpAddress, loopbackWhenInsecure, path, programSettings, resolveSettings, wholeNumber, type Env, type ProgramSettings } from "../common/config.js";

const MIB = 1024 * 1024;

const schema = z.object({
  ...PROGRAM_SHAPE,
  listen: hostPort.default("0.0.0.0:7443"),
  http: httpAddress.default("0.0.0.0:9464"),
  feed: z.array(z.string()).default([]),
  policies: path.optional(),
  maxContainersPerNode: wholeNumber.min(1, { error: "expected a whole number of at least 1" }).default(DEFAULT_NODE_CAPS.maxContainers),
  maxGraphMbPerNode: wholeNumber.min(1, { error: "expected a whole number of MiB, at least 1" }).default(DEFAULT_NODE_CAPS.maxGraphBytes / MIB),
}).superRefine(loopbackWhenInsecure("listen", "http"));

const SOURCES = {
  ...PROGRAM_SOURCES,
  maxContainersPerNode: { env: "SHADOWLAYER_MAX_CONTAINERS_PER_NODE" },
  maxGraphMbPerNode: { env: "SHADOWLAYER_MAX_GRAPH_MB_PER_NODE" },
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
  return {
    aggregator: {
      dataDir: s.dataDir,
      listen: s.listen,
      http: s.http,
      feeds: parseFeedFlags(s.feed),
      caps: { maxContainers: s.maxContainersPerNode, maxGraphBytes: s.maxGraphMbPerNode * MIB },
    },
    ...(s.policies !== undefined ? { policiesFile: s.policies } : {}),
    ...programSettings(s),
  };
}
