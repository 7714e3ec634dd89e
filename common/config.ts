/**
 * What every program's configuration shares: a setting comes from its flag, else its environment
 * variable, else its default; one zod schema per program checks the merged values, and a refusal
 * names the flag or variable the bad value came from. Light on purpose (zod and node: only): the
 * configuration modules load without the runtime of the program they configure.
 */
import { homedir, hostname } from "node:os";
import { join, resolve } from "node:path";
import { z } from "zod";
import { Code, ShadowError } from "./errors.js";
import { describeValue } from "./parse-with-schema.js";
import { isLoopbackAddress, LOOPBACK_ONLY } from "./listen-address.js";

/** The process environment, or a test's stand-in for it. */
export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Where one setting is read from besides its flag, whose name is the setting's in kebab case
 * (`sampleMs`: --sample-ms) unless `flag` names another. `fromEnv` turns the variable's text into
 * the setting; undefined ignores it.
 */
export interface Source {
  flag?: string;
  env?: string;
  fromEnv?: (text: string) => string | undefined;
}

const flagOf = (key: string, source: Source | undefined) => source?.flag ?? `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/**
 * Merges flags → environment → defaults (the schema's) and checks the result. `flags` holds what the
 * command line gave, undefined where it gave nothing; an empty variable counts as unset.
 */
export function resolveSettings<S extends z.ZodObject>(schema: S, flags: object, env: Env, sources?: Readonly<Partial<Record<keyof z.input<S> & string, Source>>>): z.output<S> {
  const src: Readonly<Record<string, Source | undefined>> = sources ?? {};
  const input: Record<string, unknown> = {};
  const from: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const source = src[key];
    const flag = (flags as Record<string, unknown>)[key];
    if (flag !== undefined) {
      input[key] = flag;
      from[key] = flagOf(key, source);
      continue;
    }
    const text = source?.env === undefined ? undefined : env[source.env];
    const value = text === undefined || text === "" ? undefined : source?.fromEnv ? source.fromEnv(text) : text;
    if (value !== undefined && source?.env !== undefined) {
      input[key] = value;
      from[key] = source.env;
    }
  }
  // reportInput: a check across settings (loopbackWhenInsecure) can name a default's value too.
  const parsed = schema.safeParse(input, { reportInput: true });
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const key = String(issue?.path[0] ?? "");
  const given = key in input;
  const got = issue === undefined ? undefined : given ? valueAt(input, issue.path) : issue.input;
  const shown = got === undefined ? "" : `, got ${describeValue(got)}${given ? "" : " (the default)"}`;
  throw new ShadowError(Code.InvalidArgument, `${from[key] ?? flagOf(key, src[key])}: ${issue?.message ?? "invalid"}${shown}`);
}

/** The offending value itself (one element of a repeated flag, not the whole list). */
function valueAt(input: Record<string, unknown>, path: readonly PropertyKey[]): unknown {
  let v: unknown = input;
  for (const k of path) {
    if (typeof v !== "object" || v === null) return v;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

// Flags and variables are text, so numbers are coerced; each schema carries the sentence a person reads.

export const positiveNumber = z.coerce.number({ error: "expected a positive number" }).positive({ error: "expected a positive number" });
export const wholeNumber = z.coerce.number({ error: "expected a whole number" }).int({ error: "expected a whole number" });
export const aNumber = z.coerce.number({ error: "expected a number" });
export const path = z.string({ error: "expected a path" }).min(1, { error: "expected a path" });

/** host:port (a bracketed IPv6 host is fine); port 0 picks a free one. */
export const hostPort = z
  .string()
  .regex(/^(?:\[[^\]]+\]|[^\s:[\]]+):\d{1,5}$/, { error: "expected host:port" })
  .refine((a) => Number(a.slice(a.lastIndexOf(":") + 1)) <= 65535, { error: "expected a port of at most 65535" });

/** An HTTP endpoint's address: host:port, :port or a bare port (the host is then loopback). */
export const httpAddress = z
  .string()
  .regex(/^(?:(?:\[[^\]]+\]|[^\s:[\]]*):)?\d{1,5}$/, { error: "expected host:port" })
  .refine((a) => Number(a.slice(a.lastIndexOf(":") + 1)) <= 65535, { error: "expected a port of at most 65535" });

/** A node's name: it becomes a file name and the agent certificate's CN. */
export const NODE_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,252})$/;
export const nodeName = z.string().regex(NODE_NAME, { error: "expected a node name: letters, digits, '.', '_' or '-' (at most 253)" });

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const logLevel = z.enum(LOG_LEVELS, { error: `expected one of ${LOG_LEVELS.join(", ")}` });

export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";

/** The settings more than one program reads, with the variable each may come from. */
export const SHARED = {
  dataDir: {
    source: { env: "SHADOWLAYER_DATA_DIR" },
    schema: path.default(() => join(homedir(), ".shadowlayer")),
  },
  node: {
    source: { env: "SHADOWLAYER_NODE" },
    schema: nodeName.default(() => hostname()),
  },
  dockerSocket: {
    // Only a unix:// DOCKER_HOST names a socket; another scheme is left to the tools that speak it.
    source: { env: "DOCKER_HOST", fromEnv: (t: string) => (t.startsWith("unix://") ? t.slice("unix://".length) : undefined) },
    schema: path.default(DEFAULT_DOCKER_SOCKET),
  },
  logLevel: {
    source: { env: "SHADOWLAYER_LOG_LEVEL" },
    schema: logLevel.default("info"),
  },
} as const satisfies Record<string, { source: Source; schema: z.ZodType }>;

/** Where the certificates live when no --tls-dir says otherwise. */
export function tlsDirOf(dataDir: string): string {
  return join(resolve(dataDir), "tls");
}

/** What the agent and the aggregator both take: a data dir, certificates (or --insecure), a log level. */
export const PROGRAM_SHAPE = {
  dataDir: SHARED.dataDir.schema,
  tlsDir: path.optional(),
  insecure: z.boolean().default(false),
  logLevel: SHARED.logLevel.schema,
};

export const PROGRAM_SOURCES = { dataDir: SHARED.dataDir.source, logLevel: SHARED.logLevel.source };

/**
 * With --insecure every listener stays on loopback: a program without TLS or client certificates
 * must not be reachable from another host. `keys` are the listen addresses to check (HTTP ones
 * too: an insecure program is a test program, and its metrics name nodes and containers).
 */
export function loopbackWhenInsecure<K extends string>(...keys: K[]) {
  return (s: { insecure: boolean } & { [k in K]?: string | undefined }, ctx: z.RefinementCtx): void => {
    if (!s.insecure) return;
    for (const k of keys) {
      const v = s[k];
      if (v !== undefined && !isLoopbackAddress(v)) ctx.addIssue({ code: "custom", path: [k], message: LOOPBACK_ONLY, input: v });
    }
  };
}

/** How a program makes its TLS material and its logger. */
export interface ProgramSettings {
  tlsDir: string;
  insecure: boolean;
  logLevel: LogLevel;
}

export function programSettings(s: { dataDir: string; tlsDir?: string | undefined; insecure: boolean; logLevel: LogLevel }): ProgramSettings {
  return { tlsDir: s.tlsDir ?? tlsDirOf(s.dataDir), insecure: s.insecure, logLevel: s.logLevel };
}
