/**
 * The Kubernetes manifests configure the agent and the aggregator through flags, env and the
 * ConfigMap; each workload's settings must be flags its command takes and pass its program's
 * configuration schema, with the values the manifests mean.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { resolveAgentConfig, type AgentFlags } from "../../agent/config.js";
import { resolveAggregatorConfig, type AggregatorFlags } from "../../aggregator/config.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { execFileP } from "../harness/engine.js";

type Obj = Record<string, unknown>;

function docs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(join(PACKAGE_ROOT, "deploy", file), "utf8"))
    .map((d) => d.toJS() as Obj | null)
    .filter((d): d is Obj => d !== null);
}

function container(file: string, kind: string): { command: string[]; env: Array<{ name: string; value?: string }> } {
  const w = docs(file).find((d) => d["kind"] === kind) as { spec: { template: { spec: { containers: Array<{ command: string[]; env?: Array<{ name: string; value?: string }> }> } } } };
  const c = w.spec.template.spec.containers[0];
  assert.ok(c, `${file}: no container`);
  return { command: c.command, env: c.env ?? [] };
}

/** The ConfigMap's data plus the container's own env, with Kubernetes' $(VAR) expanded. */
function environment(env: Array<{ name: string; value?: string }>, known: Record<string, string>): Record<string, string> {
  const cm = docs("configmap.yaml").find((d) => d["kind"] === "ConfigMap") as { data: Record<string, string> };
  const out: Record<string, string> = { ...cm.data, ...known };
  for (const e of env) if (e.value !== undefined) out[e.name] = e.value.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => out[v] ?? "");
  return out;
}

/** The options commander collects into arrays (declared `<x...>`): repeated, they add up. */
const REPEATABLE = new Set(["feed", "builder", "recipeRoot", "baseMap"]);

/**
 * `--flag value` pairs (or a lone `--switch`) as commander hands them over, camelCased, with the
 * kubelet's $(VAR) expansion of command arguments from the container's environment.
 */
function flags(args: string[], env: Record<string, string> = {}): Record<string, string | boolean | string[]> {
  const out: Record<string, string | boolean | string[]> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    assert.match(a, /^--[a-z-]+$/, `unexpected argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const next = args[i + 1];
    if (next === undefined || next.startsWith("--")) out[key] = true;
    else {
      const value = next.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? `$(${v})`);
      out[key] = REPEATABLE.has(key) ? [...((out[key] as string[] | undefined) ?? []), value] : value;
      i++;
    }
  }
  return out;
}

async function assertFlagsKnown(command: string, args: string[]): Promise<void> {
  const { stdout } = await execFileP(process.execPath, [join(PACKAGE_ROOT, "dist", "cli", "main.js"), command, "--help"]);
  for (const a of args.filter((x) => x.startsWith("--"))) assert.match(stdout, new RegExp(`\\s${a}\\b`), `${command} takes no ${a}`);
}

describe("deploy/ against the programs' configurations", () => {
  it("the agent DaemonSet", async () => {
    const { command, env } = container("agent-daemonset.yaml", "DaemonSet");
    assert.deepEqual(command.slice(0, 2), ["shadowlayer", "agent"]);
    await assertFlagsKnown("agent", command.slice(2));
    const c = resolveAgentConfig(flags(command.slice(2)) as AgentFlags, environment(env, { NODE_NAME: "node-1" }));
    assert.equal(c.agent.node, "node-1");
    assert.equal(c.agent.aggregator, "shadowlayer-aggregator.shadowlayer.svc:7443");
    assert.equal(c.agent.procRoot, "/host/proc");
    assert.equal(c.agent.http, "0.0.0.0:9465");
    assert.equal(c.tlsDir, "/etc/shadowlayer/tls");
    assert.equal(c.insecure, false);
    assert.equal(c.logLevel, "info");
  });

  it("the aggregator Deployment", async () => {
    const { command, env } = container("aggregator.yaml", "Deployment");
    assert.deepEqual(command.slice(0, 2), ["shadowlayer", "aggregator"]);
    await assertFlagsKnown("aggregator", command.slice(2));
    const e = environment(env, {});
    const c = resolveAggregatorConfig(flags(command.slice(2), e) as AggregatorFlags, e);
    const { rebuild, ...rest } = c.aggregator;
    assert.deepEqual(rest, { dataDir: "/var/lib/shadowlayer", listen: "0.0.0.0:7443", http: "0.0.0.0:9464", feeds: [], caps: { maxContainers: 5000, maxGraphBytes: 64 * 1024 * 1024 } });
    // Shadows are built on the dedicated build nodes over TLS, pushed to the configured registry and signed with the mounted key.
    assert.ok(rebuild !== undefined);
    assert.ok(rebuild.builders.length > 0 && rebuild.builders.every((b) => b.startsWith("tcp://") && b.includes(",tls=")), rebuild.builders.join(" "));
    assert.equal(rebuild.registry, e["SHADOWLAYER_REGISTRY"]);
    assert.equal(rebuild.signingKey, "/etc/shadowlayer/tls/cosign.key");
    assert.equal(rebuild.enabled, true);
    assert.equal(c.tlsDir, "/etc/shadowlayer/tls");
    assert.equal(c.logLevel, "info");
  });

  it("would refuse a broken ConfigMap value, naming it", () => {
    const { command, env } = container("agent-daemonset.yaml", "DaemonSet");
    const e = { ...environment(env, { NODE_NAME: "node-1" }), SHADOWLAYER_LOG_LEVEL: "INFO" };
    assert.throws(() => resolveAgentConfig(flags(command.slice(2)) as AgentFlags, e), /^ShadowError: SHADOWLAYER_LOG_LEVEL: expected one of/);
  });
});
