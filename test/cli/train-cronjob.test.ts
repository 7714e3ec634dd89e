/**
 * deploy/anomaly-train, the nightly `shadowlayer train --deploy` CronJob: it validates against the
 * Kubernetes schema (kubernetes-models, offline), its command is one `train` accepts (the same
 * resolveTrainPlan the CLI runs, with the ConfigMap's variables expanded), the certificates the
 * CLI reads for ListWindows (reader) and DeployModel (admin) are mounted from a Secret the README
 * creates, without the CA key, and the models go to a writable mount.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, posix } from "node:path";
import { describe, it } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import { CronJob } from "kubernetes-models/batch/v1";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { resolveTrainPlan, type TrainFlags } from "../../cli/train-config.js";

const DIR = join(PACKAGE_ROOT, "deploy", "anomaly-train");
type Obj = Record<string, unknown>;

const get = (o: unknown, ...keys: Array<string | number>): unknown => keys.reduce<unknown>((cur, k) => (cur !== null && typeof cur === "object" ? (cur as Record<string | number, unknown>)[k] : undefined), o);

/** The command's flags as commander hands them to `train` (repeatable --image adds up). */
function flagsOf(command: string[], env: Record<string, string>): TrainFlags {
  assert.deepEqual(command.slice(0, 2), ["shadowlayer", "train"]);
  const flags: Record<string, unknown> = {};
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
    const value = next.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => {
      assert.ok(env[v] !== undefined, `$(${v}) is not in the ConfigMap`);
      return env[v] as string;
    });
    flags[key] = key === "image" ? [...((flags[key] as string[] | undefined) ?? []), value] : value;
  }
  return flags as TrainFlags;
}

describe("deploy/anomaly-train: the nightly training CronJob", () => {
  const docs = parseAllDocuments(readFileSync(join(DIR, "cronjob.yaml"), "utf8")).map((d) => d.toJS() as Obj);
  const job = docs[0] as Obj;
  const pod = get(job, "spec", "jobTemplate", "spec", "template", "spec");
  const container = get(pod, "containers", 0) as Obj;
  const command = get(container, "command") as string[];
  const config = parse(readFileSync(join(PACKAGE_ROOT, "deploy", "configmap.yaml"), "utf8")) as Obj;

  it("validates as a batch/v1 CronJob in the shadowlayer namespace, one run at a time", () => {
    assert.equal(docs.length, 1);
    assert.doesNotThrow(() => new CronJob(job as never).validate());
    assert.equal(get(job, "metadata", "namespace"), "shadowlayer");
    assert.equal(get(job, "metadata", "labels", "app.kubernetes.io/name"), "shadowlayer");
    assert.equal(get(job, "spec", "concurrencyPolicy"), "Forbid");
    assert.equal(get(pod, "restartPolicy"), "Never");
    // The check bites.
    const broken = structuredClone(job);
    (get(broken, "spec") as Obj).schedule = 30;
    assert.throws(() => new CronJob(broken as never).validate());
    const kust = parse(readFileSync(join(DIR, "kustomization.yaml"), "utf8")) as Obj;
    assert.equal(kust.kind, "Component");
    assert.deepEqual(kust.resources, ["cronjob.yaml"]);
  });

  it("runs a `train --deploy` the CLI accepts, against the aggregator the ConfigMap names", () => {
    assert.equal(get(container, "envFrom", 0, "configMapRef", "name"), get(config, "metadata", "name"));
    const env = get(config, "data") as Record<string, string>;
    const flags = flagsOf(command, env);
    const now = new Date("2026-11-28T02:30:00Z");
    const plan = resolveTrainPlan(flags, {}, now);
    assert.equal(plan.deploy, true);
    assert.equal(plan.generic || plan.images.length > 0, true);
    assert.equal(plan.since.toISOString(), "2026-11-27T02:30:00.000Z");
    assert.equal(flags.aggregator, "shadowlayer-aggregator.shadowlayer.svc:7443");
    assert.equal(flags.insecure, undefined, "never --insecure");
    // Models and the data dir on a writable mount; the root filesystem is read-only.
    assert.equal(get(container, "securityContext", "readOnlyRootFilesystem"), true);
    const mounts = get(container, "volumeMounts") as Obj[];
    const under = (p: string) => mounts.find((m) => p === m.mountPath || p.startsWith(`${String(m.mountPath)}/`));
    for (const p of [plan.out, flags.dataDir ?? ""]) {
      const m = under(p);
      assert.ok(m !== undefined && m.readOnly !== true, `${p} is on a writable mount`);
      const vol = (get(pod, "volumes") as Obj[]).find((v) => v.name === m.name);
      assert.ok(vol?.emptyDir !== undefined, `${p}: scratch space`);
    }
  });

  it("mounts the CA, reader and admin pairs from a Secret the README creates, never the CA key", () => {
    const tlsDir = String(flagsOf(command, get(config, "data") as Record<string, string>).tlsDir);
    const mount = (get(container, "volumeMounts") as Obj[]).find((m) => m.mountPath === tlsDir);
    assert.ok(mount, `nothing mounted at ${tlsDir}`);
    const vol = (get(pod, "volumes") as Obj[]).find((v) => v.name === mount.name);
    const secret = String(get(vol, "secret", "secretName"));
    const items = (get(vol, "secret", "items") as Obj[]).map((i) => [String(i.key), String(i.path)]);
    const paths = new Set(items.map(([, p]) => posix.join(tlsDir, p as string)));
    for (const f of ["ca.crt", "reader.crt", "reader.key", "admin.crt", "admin.key"]) assert.ok(paths.has(posix.join(tlsDir, f)), `${f} under ${tlsDir}`);
    assert.ok(!items.some(([k]) => k === "ca.key"));
    const readme = readFileSync(join(PACKAGE_ROOT, "deploy", "README.md"), "utf8");
    const block = new RegExp(`create secret generic ${secret}([\\s\\S]*?)\\n\\s*\\n|create secret generic ${secret}([\\s\\S]*?)#`).exec(readme);
    assert.ok(block, `the README creates Secret ${secret}`);
    for (const [key] of items) assert.match(block[0], new RegExp(`--from-file=${(key as string).replace(".", "\\.")}=`), `the README's Secret has ${key}`);
  });

  it("is refused when it would train nothing or mix sources", () => {
    assert.throws(() => resolveTrainPlan({ deploy: true }, {}), /--image .* or --generic/);
    assert.throws(() => resolveTrainPlan({ generic: true, fromFile: "w.jsonl", since: "1h" }, {}), /give one source/);
    assert.throws(() => resolveTrainPlan({ generic: true, epochs: "0" }, {}), /--epochs: expected a whole number from 1 to 1000/);
    assert.throws(() => resolveTrainPlan({ generic: true, node: "n1" }, {}), /--node says where --deploy/);
  });
});
