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
import { FALCO_PRIORITIES, parsePriority } from "./control/falco-alert.js";
import { DEFAULT_MIN_PRIORITY, ruleMatcher } from "./control/falco-filter.js";
import type { FalcoIntakeOptions } from "./control/falco-intake.js";
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
  falcoListen: hostPort.optional(),
  falcoTokenFile: path.optional(),
  // The variable's text says true or false; the flag is a boolean already.
  falcoMtls: z.preprocess((v) => (v === "true" ? true : v === "false" ? false : v), z.boolean({ error: "expected true or false" })).default(false),
  falcoRule: z.array(z.string().min(1, { error: "expected a rule name or /regex/" }).refine(compiles, { error: (i) => compileError(i.input) })).default([]),
  falcoMinPriority: z
    .string()
    .refine((v) => parsePriority(v) !== undefined, { error: `expected one of ${FALCO_PRIORITIES.join(", ")}` })
    .transform((v) => parsePriority(v) ?? DEFAULT_MIN_PRIORITY)
    .default(DEFAULT_MIN_PRIORITY),
})
  .superRefine(loopbackWhenInsecure("listen", "http", "falcoListen"))
  .superRefine(falcoNeedsAuth);

function compiles(entry: string): boolean {
  return compileError(entry) === undefined;
}

function compileError(entry: unknown): string | undefined {
  try {
    ruleMatcher(String(entry));
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** The intake admits no anonymous alert: a token, or client certificates (which need TLS). */
function falcoNeedsAuth(s: { insecure: boolean; falcoListen?: string | undefined; falcoTokenFile?: string | undefined; falcoMtls: boolean; falcoRule: string[] }, ctx: z.RefinementCtx): void {
  if (s.falcoListen === undefined) {
    const given = s.falcoTokenFile !== undefined ? "falcoTokenFile" : s.falcoMtls ? "falcoMtls" : s.falcoRule.length > 0 ? "falcoRule" : undefined;
    if (given !== undefined) ctx.addIssue({ code: "custom", path: [given], message: "configures the Falco intake, which runs only with --falco-listen" });
    return;
  }
  if (s.falcoMtls && s.insecure) ctx.addIssue({ code: "custom", path: ["falcoMtls"], message: "client certificates need TLS (not --insecure)" });
  else if (s.falcoTokenFile === undefined && !s.falcoMtls) {
    ctx.addIssue({ code: "custom", path: ["falcoListen"], message: `the intake needs --falco-token-file${s.insecure ? "" : " or --falco-mtls"}: it admits no anonymous alert`, input: s.falcoListen });
  }
}

const SOURCES = {
  ...PROGRAM_SOURCES,
  maxContainersPerNode: { env: "SHADOWLAYER_MAX_CONTAINERS_PER_NODE" },
  maxGraphMbPerNode: { env: "SHADOWLAYER_MAX_GRAPH_MB_PER_NODE" },
  dockerSocket: SHARED.dockerSocket.source,
  registry: { env: "SHADOWLAYER_REGISTRY" },
  registryAuth: { env: "SHADOWLAYER_REGISTRY_AUTH" },
  registryCa: { env: "SHADOWLAYER_REGISTRY_CA" },
  packageMirror: { env: "SHADOWLAYER_PACKAGE_MIRROR" },
  falcoListen: { env: "SHADOWLAYER_FALCO_LISTEN" },
  falcoTokenFile: { env: "SHADOWLAYER_FALCO_TOKEN_FILE" },
  falcoMtls: { env: "SHADOWLAYER_FALCO_MTLS" },
  falcoMinPriority: { env: "SHADOWLAYER_FALCO_MIN_PRIORITY" },
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
  const falco: FalcoIntakeOptions | undefined =
    s.falcoListen === undefined
      ? undefined
      : { listen: s.falcoListen, mtls: s.falcoMtls, rules: s.falcoRule, minPriority: s.falcoMinPriority, ...(s.falcoTokenFile !== undefined ? { tokenFile: s.falcoTokenFile } : {}) };
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
      ...(falco !== undefined ? { falco } : {}),
    },
    ...(s.policies !== undefined ? { policiesFile: s.policies } : {}),
    ...program,
  };
}
