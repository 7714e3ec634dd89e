/**
 * The aggregator program's configuration (`shadowlayer aggregator`, and the aggregator half of
 * `up`): flags → environment → defaults, merged and checked here and nowhere else.
 */
import { z } from "zod";
import type { AggregatorOptions } from "./server.js";
import { parseFeedFlags } from "./feeds/feed-config.js";
import { PROGRAM_SHAPE, PROGRAM_SOURCES, hostPort, httpAddress, loopbackWhenInsecure, path, programSettings, resolveSettings, type Env, type ProgramSettings } from "../common/config.js";

const schema = z.object({
  ...PROGRAM_SHAPE,
  listen: hostPort.default("0.0.0.0:7443"),
  http: httpAddress.default("0.0.0.0:9464"),
  feed: z.array(z.string()).default([]),
  policies: path.optional(),
}).superRefine(loopbackWhenInsecure("listen", "http"));

/** The aggregator's flags as commander hands them over. */
export type AggregatorFlags = { [K in keyof z.input<typeof schema>]?: string | boolean | string[] | undefined };

export interface AggregatorConfig extends ProgramSettings {
  /** What startAggregator takes but the logger, the TLS material and the policies. */
  aggregator: Omit<AggregatorOptions, "log" | "tls" | "policies">;
  /** A JSON array of policies to seed, read by the caller through the policy schema. */
  policiesFile?: string;
}

export function resolveAggregatorConfig(flags: AggregatorFlags, env: Env): AggregatorConfig {
  const s = resolveSettings(schema, flags, env, PROGRAM_SOURCES);
  return {
    aggregator: { dataDir: s.dataDir, listen: s.listen, http: s.http, feeds: parseFeedFlags(s.feed) },
    ...(s.policies !== undefined ? { policiesFile: s.policies } : {}),
    ...programSettings(s),
  };
}
