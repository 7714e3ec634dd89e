/**
 * deploy/falco, the kustomize component that turns the Falco intake on in Kubernetes: its JSON
 * patches applied to the aggregator's manifests still make a valid Deployment and Service; the
 * patched command passes the aggregator's configuration with the intake on; the token file it
 * names is the Secret's mount; the Service reaches the port; and the Falco and falcosidekick
 * snippets post where it listens, the way the intake takes (JSON, POST, the CA).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1";
import { Service } from "kubernetes-models/v1";
import { resolveAggregatorConfig, type AggregatorFlags } from "../../aggregator/config.js";
import { PACKAGE_ROOT } from "../../common/paths.js";

const DEPLOY = join(PACKAGE_ROOT, "deploy");
type Obj = Record<string, unknown>;
interface Op {
  op: string;
  path: string;
  value: unknown;
}

const load = (file: string): unknown => parse(readFileSync(join(DEPLOY, file), "utf8"));
const docsOf = (file: string): Obj[] => parseAllDocuments(readFileSync(join(DEPLOY, file), "utf8")).map((d) => d.toJS() as Obj);

/** RFC 6902 `add` (the only op the component uses), `-` appending to an array. */
function applyAdd(doc: Obj, ops: Op[]): Obj {
  const out = structuredClone(doc);
  for (const o of ops) {
    assert.equal(o.op, "add", o.path);
    const parts = o.path.split("/").slice(1);
    const last = parts.pop();
    let at: unknown = out;
    for (const p of parts) at = Array.isArray(at) ? at[Number(p)] : (at as Obj)[p];
    assert.ok(Array.isArray(at) && last === "-", `${o.path}: appends to an array that exists`);
    at.push(o.value);
  }
  return out;
}

/** A container command's --flags as commander would hand them over (repeated flags add up). */
function flagsOf(command: string[], env: Record<string, string>): AggregatorFlags {
  const flags: Record<string, string | boolean | string[]> = {};
  const repeatable = new Set(["feed", "builder", "recipeRoot", "baseMap", "falcoRule"]);
  for (let i = 2; i < command.length; i++) {
    const arg = command[i] ?? "";
    assert.ok(arg.startsWith("--"), `a flag, got ${arg}`);
    const key = arg.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const next = command[i + 1];
    if (next === undefined || next.startsWith("--")) {
      flags[key] = true;
      continue;
    }
    i++;
    const value = next.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? "");
    flags[key] = repeatable.has(key) ? [...((flags[key] as string[] | undefined) ?? []), value] : value;
  }
  return flags as AggregatorFlags;
}

describe("deploy/falco", () => {
  const component = load("falco/kustomization.yaml") as { kind: string; patches: Array<{ path: string; target: { kind: string; name: string } }> };
  const patched = (kind: string): Obj => {
    const base = docsOf("aggregator.yaml").find((d) => d["kind"] === kind);
    assert.ok(base !== undefined, kind);
    const patch = component.patches.find((p) => p.target.kind === kind);
    assert.ok(patch !== undefined, `a patch for the ${kind}`);
    assert.equal(patch.target.name, (base["metadata"] as Obj)["name"]);
    return applyAdd(base, load(join("falco", patch.path)) as Op[]);
  };

  it("is a component whose patches keep the Deployment and Service valid", () => {
    assert.equal(component.kind, "Component");
    new Deployment(patched("Deployment") as never).validate();
    new Service(patched("Service") as never).validate();
  });

  it("turns the intake on with the token from the Secret's mount, and the Service reaches its port", () => {
    const dep = patched("Deployment") as { spec: { template: { spec: { containers: Array<{ command: string[]; ports: Array<{ name: string; containerPort: number }>; volumeMounts: Array<{ name: string; mountPath: string }> }>; volumes: Array<{ name: string; secret?: { secretName: string; items: Array<{ key: string; path: string }> } }> } } } };
    const c = dep.spec.template.spec.containers[0];
    assert.ok(c !== undefined);
    const cm = docsOf("configmap.yaml").find((d) => d["kind"] === "ConfigMap") as { data: Record<string, string> };
    const falco = resolveAggregatorConfig(flagsOf(c.command, cm.data), {}).aggregator.falco;
    assert.deepEqual(falco, { listen: "0.0.0.0:7444", tokenFile: "/etc/shadowlayer/falco/token", mtls: false, rules: ["Drop and execute new binary in container"], minPriority: "warning" });
    const mount = c.volumeMounts.find((m) => m.name === "falco");
    const volume = dep.spec.template.spec.volumes.find((v) => v.name === "falco");
    assert.equal(`${mount?.mountPath}/${volume?.secret?.items[0]?.path}`, falco?.tokenFile);
    assert.equal(volume?.secret?.secretName, "shadowlayer-falco");
    assert.equal(c.ports.find((p) => p.name === "falco")?.containerPort, 7444);
    const svc = patched("Service") as { spec: { ports: Array<{ name: string; port: number; targetPort: string }> } };
    assert.deepEqual(svc.spec.ports.find((p) => p.name === "falco"), { name: "falco", port: 7444, targetPort: "falco", protocol: "TCP" });
  });

  it("points Falco's http_output and falcosidekick's webhook at the intake, as JSON, POST, checking the CA", () => {
    const f = load("falco/falco-http-output.yaml") as { json_output: boolean; http_output: { enabled: boolean; url: string; ca_cert: string; insecure: boolean } };
    assert.equal(f.json_output, true);
    assert.equal(f.http_output.enabled, true);
    assert.equal(f.http_output.insecure, false);
    const url = new URL(f.http_output.url);
    assert.deepEqual([url.protocol, url.hostname, url.port, url.pathname, url.username], ["https:", "shadowlayer-aggregator.shadowlayer.svc", "7444", "/v1/falco", "falco"]);
    assert.match(f.http_output.ca_cert, /ca\.crt$/);
    const s = load("falco/falcosidekick-config.yaml") as { webhook: { address: string; method: string; customHeaders: Record<string, string>; checkcert: boolean }; tlsclient: { cacertfile: string } };
    assert.equal(s.webhook.address, "https://shadowlayer-aggregator.shadowlayer.svc:7444/v1/falco");
    assert.equal(s.webhook.method, "POST");
    assert.match(s.webhook.customHeaders["Authorization"] ?? "", /^Bearer /);
    assert.equal(s.webhook.checkcert, true);
    assert.match(s.tlsclient.cacertfile, /ca\.crt$/);
  });
});
