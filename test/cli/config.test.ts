/**
 * One typed configuration per program: flags → environment → defaults, checked by a schema whose
 * refusals name the flag or variable. Every invalid setting is tried; the defaults are the
 * README's; `--help` shows the same defaults the configuration applies.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { homedir, hostname } from "node:os";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { tempDir } from "../harness/temp-dir.js";
import { resolveAgentConfig } from "../../agent/config.js";
import { resolveAggregatorConfig } from "../../aggregator/config.js";
import { resolveCertsConfig, resolveClientConfig, resolveDemoConfig, resolveLimit, policySetInput } from "../../cli/config.js";
import { resolveUpConfig } from "../../cli/run-up.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { execFileP } from "../harness/engine.js";

/** Asserts that `fn` refuses with exactly `message` (the flag or variable first). */
function refuses(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: Error) => {
    assert.equal(err.message, message);
    assert.equal((err as { code?: string }).code, "SL_INVALID_ARGUMENT");
    return true;
  });
}

describe("agent configuration", () => {
  it("defaults to the README's Configuration table", () => {
    const c = resolveAgentConfig({}, {});
    assert.deepEqual(c, {
      agent: {
        node: hostname(),
        dataDir: join(homedir(), ".shadowlayer"),
        runtime: "auto",
        dockerSocket: "/var/run/docker.sock",
        containerdSocket: "/run/containerd/containerd.sock",
        containerdNamespace: "k8s.io",
        procRoot: "/proc",
        cgroupRoot: "/sys/fs/cgroup",
        http: "127.0.0.1:9465",
        refreshMs: 2000,
        sampleMs: 1000,
        windowMs: 10_000,
        execSource: "auto",
        spoolMax: 100_000,
        anomaly: { enabled: true, warmupMs: 30 * 60_000, minWindows: 200, workers: 1, backend: "auto" },
        inventoryBudget: { maxMs: 60_000, maxEntries: 1_000_000, maxBytes: 256 * 1024 * 1024 },
        signingKeyPub: join(homedir(), ".shadowlayer", "tls", "cosign.pub"),
      },
      tlsDir: join(homedir(), ".shadowlayer", "tls"),
      insecure: false,
      logLevel: "info",
    });
  });

  it("takes a flag over its variable over the default", () => {
    const env = { SHADOWLAYER_NODE: "env-node", SHADOWLAYER_AGGREGATOR: "env-agg:7443", DOCKER_HOST: "unix:///env/docker.sock", SHADOWLAYER_DATA_DIR: "/env/data", SHADOWLAYER_LOG_LEVEL: "debug" };
    const fromEnv = resolveAgentConfig({}, env);
    assert.equal(fromEnv.agent.node, "env-node");
    assert.equal(fromEnv.agent.aggregator, "env-agg:7443");
    assert.equal(fromEnv.agent.dockerSocket, "/env/docker.sock");
    assert.equal(fromEnv.agent.dataDir, "/env/data");
    assert.equal(fromEnv.tlsDir, "/env/data/tls");
    assert.equal(fromEnv.logLevel, "debug");
    const fromFlags = resolveAgentConfig({ node: "flag-node", aggregator: "flag-agg:1", dockerSocket: "/flag.sock", dataDir: "/flag/data", tlsDir: "/flag/tls" }, env);
    assert.equal(fromFlags.agent.node, "flag-node");
    assert.equal(fromFlags.agent.aggregator, "flag-agg:1");
    assert.equal(fromFlags.agent.dockerSocket, "/flag.sock");
    assert.equal(fromFlags.agent.dataDir, "/flag/data");
    assert.equal(fromFlags.tlsDir, "/flag/tls");
  });

  it("reads the runtime choice and containerd's socket and namespace from flags over variables, and refuses a bad one", () => {
    const env = { SHADOWLAYER_RUNTIME: "containerd", CONTAINERD_ADDRESS: "/env/containerd.sock", CONTAINERD_NAMESPACE: "env-ns" };
    const fromEnv = resolveAgentConfig({}, env).agent;
    assert.deepEqual([fromEnv.runtime, fromEnv.containerdSocket, fromEnv.containerdNamespace], ["containerd", "/env/containerd.sock", "env-ns"]);
    const fromFlags = resolveAgentConfig({ runtime: "docker", containerdSocket: "/flag.sock", containerdNamespace: "flag-ns", containerdSnapshots: "/host/snaps" }, env).agent;
    assert.deepEqual([fromFlags.runtime, fromFlags.containerdSocket, fromFlags.containerdNamespace, fromFlags.containerdSnapshots], ["docker", "/flag.sock", "flag-ns", "/host/snaps"]);
    refuses(() => resolveAgentConfig({ runtime: "crio" }, {}), '--runtime: expected one of auto, docker, containerd, got "crio"');
    assert.throws(() => resolveAgentConfig({ containerdNamespace: "../etc" }, {}), /--containerd-namespace/);
  });

  it("counts an empty variable as unset, and reads DOCKER_HOST only when it names a unix socket", () => {
    const c = resolveAgentConfig({}, { SHADOWLAYER_NODE: "", SHADOWLAYER_DATA_DIR: "", DOCKER_HOST: "tcp://10.0.0.1:2375" });
    assert.equal(c.agent.node, hostname());
    assert.equal(c.agent.dataDir, join(homedir(), ".shadowlayer"));
    assert.equal(c.agent.dockerSocket, "/var/run/docker.sock");
  });

  it("converts units as the agent wants them", () => {
    const c = resolveAgentConfig({ window: "2.5", sampleMs: "250", spoolMax: "10.9", refreshMs: "1e3", execSource: "proc", bpftrace: "/opt/bpftrace", dockerRoot: "/host/docker" }, {});
    assert.equal(c.agent.windowMs, 2500);
    assert.equal(c.agent.sampleMs, 250);
    assert.equal(c.agent.spoolMax, 10);
    assert.equal(c.agent.refreshMs, 1000);
    assert.equal(c.agent.execSource, "proc");
    assert.equal(c.agent.bpftrace, "/opt/bpftrace");
    assert.equal(c.agent.dockerRoot, "/host/docker");
    const b = resolveAgentConfig({ inventoryBudgetMs: "500", inventoryBudgetEntries: "1e4", inventoryBudgetMb: "1.5" }, {}).agent.inventoryBudget;
    assert.deepEqual(b, { maxMs: 500, maxEntries: 10_000, maxBytes: 1.5 * 1024 * 1024 });
  });

  it("finds the signing public key beside the certificates, none when insecure unless given; registry files as given", () => {
    assert.equal(resolveAgentConfig({ tlsDir: "/certs" }, {}).agent.signingKeyPub, "/certs/cosign.pub");
    assert.equal(resolveAgentConfig({ insecure: true }, {}).agent.signingKeyPub, undefined);
    const c = resolveAgentConfig({ insecure: true, signingKeyPub: "/keys/agg.pub", registryAuth: "/etc/reg.auth", registryCa: "/etc/reg-ca.crt" }, {});
    assert.deepEqual([c.agent.signingKeyPub, c.agent.registryAuth, c.agent.registryCa], ["/keys/agg.pub", "/etc/reg.auth", "/etc/reg-ca.crt"]);
    refuses(() => resolveAgentConfig({ registryAuth: "" }, {}), '--registry-auth: expected a path, got ""');
  });

  it("refuses each invalid flag, naming it", () => {
    refuses(() => resolveAgentConfig({ sampleMs: "abc" }, {}), '--sample-ms: expected a positive number, got "abc"');
    refuses(() => resolveAgentConfig({ window: "0" }, {}), '--window: expected a positive number, got "0"');
    refuses(() => resolveAgentConfig({ spoolMax: "-5" }, {}), '--spool-max: expected a positive number, got "-5"');
    refuses(() => resolveAgentConfig({ inventoryBudgetMs: "0" }, {}), '--inventory-budget-ms: expected a positive number, got "0"');
    refuses(() => resolveAgentConfig({ refreshMs: "Infinity" }, {}), '--refresh-ms: expected a positive number, got "Infinity"');
    refuses(() => resolveAgentConfig({ execSource: "kprobe" }, {}), '--exec-source: expected one of auto, ebpf, proc, got "kprobe"');
    refuses(() => resolveAgentConfig({ http: "localhost" }, {}), '--http: expected host:port, got "localhost"');
    refuses(() => resolveAgentConfig({ http: "127.0.0.1:70000" }, {}), '--http: expected a port of at most 65535, got "127.0.0.1:70000"');
    refuses(() => resolveAgentConfig({ aggregator: "agg" }, {}), '--aggregator: expected host:port, got "agg"');
    refuses(() => resolveAgentConfig({ node: "my/node" }, {}), `--node: expected a node name: letters, digits, '.', '_' or '-' (at most 253), got "my/node"`);
    refuses(() => resolveAgentConfig({ procRoot: "" }, {}), '--proc-root: expected a path, got ""');
    refuses(() => resolveAgentConfig({ dataDir: "" }, {}), '--data-dir: expected a path, got ""');
  });

  it("refuses each invalid variable, naming it", () => {
    refuses(() => resolveAgentConfig({}, { SHADOWLAYER_NODE: "node one" }), `SHADOWLAYER_NODE: expected a node name: letters, digits, '.', '_' or '-' (at most 253), got "node one"`);
    refuses(() => resolveAgentConfig({}, { SHADOWLAYER_AGGREGATOR: "no-port" }), 'SHADOWLAYER_AGGREGATOR: expected host:port, got "no-port"');
    refuses(() => resolveAgentConfig({}, { SHADOWLAYER_LOG_LEVEL: "verbose" }), 'SHADOWLAYER_LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent, got "verbose"');
    refuses(() => resolveAgentConfig({}, { DOCKER_HOST: "unix://" }), 'DOCKER_HOST: expected a path, got ""');
  });

  it("with --insecure, refuses an HTTP endpoint off loopback, naming the flag", () => {
    refuses(() => resolveAgentConfig({ insecure: true, http: "0.0.0.0:9465" }, {}), '--http: --insecure listens on loopback only (127.0.0.0/8, ::1 or localhost), got "0.0.0.0:9465"');
    refuses(() => resolveAgentConfig({ insecure: true, http: "127.example.org:1" }, {}), '--http: --insecure listens on loopback only (127.0.0.0/8, ::1 or localhost), got "127.example.org:1"');
    for (const http of ["127.0.0.1:9465", "[::1]:1", "localhost:1", ":9465", "9465"]) assert.equal(resolveAgentConfig({ insecure: true, http }, {}).insecure, true, http);
    assert.equal(resolveAgentConfig({ http: "0.0.0.0:9465" }, {}).agent.http, "0.0.0.0:9465", "with TLS any address");
  });

  it("a valid flag hides an invalid variable (the flag wins before anything is checked)", () => {
    assert.equal(resolveAgentConfig({ node: "n1" }, { SHADOWLAYER_NODE: "bad node" }).agent.node, "n1");
  });
});

describe("aggregator configuration", () => {
  it("refuses bad rebuild settings, naming the flag", () => {
    assert.throws(() => resolveAggregatorConfig({ baseMap: ["debian:12"] }, {}), /--base-map "debian:12": expected OLD=NEW/);
    assert.throws(() => resolveAggregatorConfig({ baseMap: ["a=$(id)"] }, {}), /--base-map "a=\$\(id\)": expected OLD=NEW/);
    assert.throws(() => resolveAggregatorConfig({ packageMirror: "ftp://mirror" }, {}), /--package-mirror ftp:\/\/mirror: expected an http:\/\/ or https:\/\/ URL/);
    assert.throws(() => resolveAggregatorConfig({ registry: "https://r.example/x" }, {}), /--registry "https:\/\/r\.example\/x"/);
    assert.throws(() => resolveAggregatorConfig({ shadowsKeep: "0" }, {}), /--shadows-keep: expected a whole number of at least 1/);
    const c = resolveAggregatorConfig({ baseMap: ["debian:12.1=debian:12.9"], registry: "127.0.0.1:5000/shadows/app", insecure: true, listen: "127.0.0.1:1", http: "127.0.0.1:2" }, {});
    assert.deepEqual(c.aggregator.rebuild?.baseMap, { "debian:12.1": "debian:12.9" });
    assert.equal(c.aggregator.rebuild?.signingKey, undefined, "without TLS the stage makes its key in the data dir");
  });

  it("defaults to the README's Configuration table", () => {
    const c = resolveAggregatorConfig({}, {});
    assert.deepEqual(c, {
      aggregator: {
        dataDir: join(homedir(), ".shadowlayer"),
        listen: "0.0.0.0:7443",
        http: "0.0.0.0:9464",
        feeds: [],
        caps: { maxContainers: 5000, maxGraphBytes: 64 * 1024 * 1024 },
        // The README's rebuild rows: on, the local engine as the one builder, shadows kept in it, three per image.
        rebuild: { enabled: true, builders: [], dockerSocket: "/var/run/docker.sock", recipeRoots: [], baseMap: {}, keep: 3, signingKey: join(homedir(), ".shadowlayer", "tls", "cosign.key") },
      },
      tlsDir: join(homedir(), ".shadowlayer", "tls"),
      insecure: false,
      logLevel: "info",
    });
  });

  it("parses feeds and keeps the policy file's path", () => {
    const c = resolveAggregatorConfig({ feed: ["osv=/data/osv", "kev=https://example.org/kev.json", "osv=/more"], policies: "/etc/p.json", listen: "[::1]:0", http: ":9464" }, { SHADOWLAYER_DATA_DIR: "/d" });
    assert.deepEqual(
      c.aggregator.feeds?.map((f) => `${f.name}:${f.kind}:${f.source}`),
      ["osv:osv:/data/osv", "kev:kev:https://example.org/kev.json", "osv-2:osv:/more"],
    );
    assert.equal(c.policiesFile, "/etc/p.json");
    assert.equal(c.aggregator.listen, "[::1]:0");
    assert.equal(c.aggregator.dataDir, "/d");
  });

  it("refuses each invalid flag or variable, naming it", () => {
    refuses(() => resolveAggregatorConfig({ listen: "7443" }, {}), '--listen: expected host:port, got "7443"');
    refuses(() => resolveAggregatorConfig({ http: "a:b" }, {}), '--http: expected host:port, got "a:b"');
    refuses(() => resolveAggregatorConfig({ feed: ["cve=/x"] }, {}), '--feed "cve=/x": expected KIND=SOURCE with KIND one of osv, kev, epss, nvd and SOURCE a path or https URL');
    refuses(() => resolveAggregatorConfig({ feed: ["osv=http://example.org/all.zip"] }, {}), "feed source http://example.org/all.zip: only https:// URLs (or http:// to loopback) are accepted");
    refuses(() => resolveAggregatorConfig({}, { SHADOWLAYER_LOG_LEVEL: "loud" }), 'SHADOWLAYER_LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"');
  });

  it("with --insecure, refuses to listen off loopback, naming the flag (a default too)", () => {
    const only = "--insecure listens on loopback only (127.0.0.0/8, ::1 or localhost)";
    refuses(() => resolveAggregatorConfig({ insecure: true }, {}), `--listen: ${only}, got "0.0.0.0:7443" (the default)`);
    refuses(() => resolveAggregatorConfig({ insecure: true, listen: "[::]:7443" }, {}), `--listen: ${only}, got "[::]:7443"`);
    refuses(() => resolveAggregatorConfig({ insecure: true, listen: "127.0.0.1:7443" }, {}), `--http: ${only}, got "0.0.0.0:9464" (the default)`);
    refuses(() => resolveAggregatorConfig({ insecure: true, listen: "127.0.0.1:7443", http: "10.0.0.1:9464" }, {}), `--http: ${only}, got "10.0.0.1:9464"`);
    const c = resolveAggregatorConfig({ insecure: true, listen: "[::1]:7443", http: "localhost:9464" }, {});
    assert.deepEqual([c.insecure, c.aggregator.listen, c.aggregator.http], [true, "[::1]:7443", "localhost:9464"]);
  });
});

describe("up: both configurations composed", () => {
  const tmp = tempDir("sl-config-");

  it("listens on loopback by default and ignores SHADOWLAYER_AGGREGATOR (the agent dials its neighbour)", () => {
    const c = resolveUpConfig({}, { SHADOWLAYER_AGGREGATOR: "elsewhere:7443", SHADOWLAYER_NODE: "n1" });
    assert.equal(c.aggregator.aggregator.listen, "127.0.0.1:7443");
    assert.equal(c.aggregator.aggregator.http, "127.0.0.1:9464");
    assert.equal(c.agent.agent.http, "127.0.0.1:9465");
    assert.equal(c.agent.agent.aggregator, undefined);
    assert.equal(c.agent.agent.node, "n1");
    assert.equal(c.policies, undefined);
    assert.equal(c.json, false);
  });

  it("names up's own flags", () => {
    refuses(() => resolveUpConfig({ agentHttp: "x" }, {}), '--agent-http: expected host:port, got "x"');
    refuses(() => resolveUpConfig({ listen: "x" }, {}), '--listen: expected host:port, got "x"');
    refuses(() => resolveUpConfig({ window: "ten" }, {}), '--window: expected a positive number, got "ten"');
  });

  it("with --insecure, keeps every listener on loopback, naming up's flags", () => {
    const only = "--insecure listens on loopback only (127.0.0.0/8, ::1 or localhost)";
    assert.equal(resolveUpConfig({ insecure: true }, {}).aggregator.insecure, true, "up's defaults are loopback");
    refuses(() => resolveUpConfig({ insecure: true, listen: "0.0.0.0:7443" }, {}), `--listen: ${only}, got "0.0.0.0:7443"`);
    refuses(() => resolveUpConfig({ insecure: true, http: "0.0.0.0:9464" }, {}), `--http: ${only}, got "0.0.0.0:9464"`);
    refuses(() => resolveUpConfig({ insecure: true, agentHttp: "0.0.0.0:9465" }, {}), `--agent-http: ${only}, got "0.0.0.0:9465"`);
  });

  it("reads --policies through the policy schema", async () => {
    const good = join(tmp.path, "good.json");
    await writeFile(good, JSON.stringify([{ name: "prod", labels: { env: "prod" }, rebuild_threshold: 50, switch_threshold: 80 }]));
    const c = resolveUpConfig({ policies: good }, {});
    assert.deepEqual(
      c.policies?.map((p) => [p.name, p.labels, p.rebuildThreshold, p.switchThreshold, p.order]),
      [["prod", { env: "prod" }, 50, 80, 100]],
    );
    const notArray = join(tmp.path, "object.json");
    await writeFile(notArray, "{}");
    assert.throws(() => resolveUpConfig({ policies: notArray }, {}), new RegExp(`^ShadowError: --policies ${notArray}: `));
    const broken = join(tmp.path, "broken.json");
    await writeFile(broken, "[{");
    assert.throws(() => resolveUpConfig({ policies: broken }, {}), new RegExp(`^ShadowError: --policies ${broken}: `));
    const inverted = join(tmp.path, "inverted.json");
    await writeFile(inverted, JSON.stringify([{ name: "p", rebuild_threshold: 90, switch_threshold: 10 }]));
    assert.throws(() => resolveUpConfig({ policies: inverted }, {}), /switch_threshold/);
  });
});

describe("CLI configuration", () => {
  it("client: data dir from flag, else SHADOWLAYER_DATA_DIR, else ~/.shadowlayer; certificates under it", () => {
    assert.deepEqual(resolveClientConfig({}, {}), { dataDir: join(homedir(), ".shadowlayer"), tlsDir: join(homedir(), ".shadowlayer", "tls"), insecure: false });
    assert.deepEqual(resolveClientConfig({}, { SHADOWLAYER_DATA_DIR: "rel/dir" }), { dataDir: "rel/dir", tlsDir: join(resolve("rel/dir"), "tls"), insecure: false });
    assert.deepEqual(resolveClientConfig({ dataDir: "/f", aggregator: "h:1", tlsDir: "/t", insecure: true }, { SHADOWLAYER_DATA_DIR: "/e" }), { dataDir: "/f", aggregator: "h:1", tlsDir: "/t", insecure: true });
    refuses(() => resolveClientConfig({ aggregator: "h" }, {}), '--aggregator: expected host:port, got "h"');
  });

  it("certs init: --node names, else SHADOWLAYER_NODE, else the hostname; a bad name is named", () => {
    assert.deepEqual(resolveCertsConfig({}, {}).nodes, [hostname()]);
    assert.deepEqual(resolveCertsConfig({}, { SHADOWLAYER_NODE: "n9" }).nodes, ["n9"]);
    assert.deepEqual(resolveCertsConfig({ node: ["a", "b"], san: ["x.example"] }, { SHADOWLAYER_NODE: "n9" }), { tlsDir: join(homedir(), ".shadowlayer", "tls"), nodes: ["a", "b"], sans: ["x.example"] });
    refuses(() => resolveCertsConfig({ node: ["a", "b c"] }, {}), `--node: expected a node name: letters, digits, '.', '_' or '-' (at most 253), got "b c"`);
    refuses(() => resolveCertsConfig({}, { SHADOWLAYER_NODE: "-x" }), `SHADOWLAYER_NODE: expected a node name: letters, digits, '.', '_' or '-' (at most 253), got "-x"`);
  });

  it("demo: port, engine socket and SHADOWLAYER_BUSYBOX", () => {
    assert.deepEqual(resolveDemoConfig({}, {}), { port: 18080, down: false, dockerSocket: "/var/run/docker.sock" });
    assert.deepEqual(resolveDemoConfig({ port: "8081", down: true }, { DOCKER_HOST: "unix:///run/d.sock", SHADOWLAYER_BUSYBOX: "/opt/busybox" }), { port: 8081, down: true, dockerSocket: "/run/d.sock", busybox: "/opt/busybox" });
    refuses(() => resolveDemoConfig({ port: "0" }, {}), '--port: expected a port (1-65535), got "0"');
    refuses(() => resolveDemoConfig({ port: "web" }, {}), '--port: expected a whole number, got "web"');
  });

  it("detections --limit and policy set's flags", () => {
    assert.equal(resolveLimit({}), 100);
    assert.equal(resolveLimit({ limit: "7.9" }), 7);
    refuses(() => resolveLimit({ limit: "none" }), '--limit: expected a positive number, got "none"');
    assert.deepEqual(policySetInput("prod", { rebuild: "40", switch: "60", label: ["env=prod", "tier=a=b"], namespace: "shop" }), {
      name: "prod",
      labels: { env: "prod", tier: "a=b" },
      namespace: "shop",
      rebuild_threshold: 40,
      switch_threshold: 60,
      order: 100,
    });
    refuses(() => policySetInput("p", { rebuild: "high", switch: "60" }), '--rebuild: expected a number, got "high"');
    refuses(() => policySetInput("p", { rebuild: "1", switch: "2", order: "1.5" }), '--order: expected a whole number, got "1.5"');
    refuses(() => policySetInput("p", { rebuild: "1", switch: "2", label: ["ok=1", "=v"] }), '--label: expected key=value, got "=v"');
  });
});

describe("--help shows the defaults the configuration applies", () => {
  /** The `(default: X)` of each option in a command's help. */
  async function helpDefaults(command: string): Promise<Map<string, string>> {
    const { stdout } = await execFileP(process.execPath, [join(PACKAGE_ROOT, "dist", "cli", "main.js"), command, "--help"]);
    const flat = stdout.replace(/\s+/g, " ");
    const out = new Map<string, string>();
    for (const seg of flat.split(/ (?=--[a-z-]+ [<[])/)) {
      const flag = /^--[a-z-]+/.exec(seg)?.[0];
      const def = /default: ([^)]+)\)/.exec(seg)?.[1];
      if (flag !== undefined && def !== undefined) out.set(flag, def);
    }
    return out;
  }

  it("agent", async () => {
    const a = resolveAgentConfig({}, {}).agent;
    const help = await helpDefaults("agent");
    const expected: Record<string, string> = {
      "--refresh-ms": String(a.refreshMs),
      "--sample-ms": String(a.sampleMs),
      "--window": String((a.windowMs ?? 0) / 1000),
      "--exec-source": String(a.execSource),
      "--spool-max": String(a.spoolMax),
      "--inventory-budget-ms": String(a.inventoryBudget?.maxMs),
      "--inventory-budget-entries": String(a.inventoryBudget?.maxEntries),
      "--inventory-budget-mb": String((a.inventoryBudget?.maxBytes ?? 0) / (1024 * 1024)),
      "--proc-root": String(a.procRoot),
      "--cgroup-root": String(a.cgroupRoot),
      "--http": String(a.http),
      "--docker-socket": String(a.dockerSocket),
    };
    for (const [flag, value] of Object.entries(expected)) assert.equal(help.get(flag), value, flag);
  });

  it("aggregator and up", async () => {
    const agg = resolveAggregatorConfig({}, {}).aggregator;
    const aggHelp = await helpDefaults("aggregator");
    assert.equal(aggHelp.get("--listen"), agg.listen);
    assert.equal(aggHelp.get("--http"), agg.http);
    const up = resolveUpConfig({}, {});
    const upHelp = await helpDefaults("up");
    assert.equal(upHelp.get("--listen"), up.aggregator.aggregator.listen);
    assert.equal(upHelp.get("--http"), up.aggregator.aggregator.http);
    assert.equal(upHelp.get("--agent-http"), up.agent.agent.http);
    assert.equal(upHelp.get("--sample-ms"), String(up.agent.agent.sampleMs));
    assert.equal(upHelp.get("--refresh-ms"), String(up.agent.agent.refreshMs));
  });
});
