/**
 * Certificate roles over real mTLS: an agent publishes and nothing else, a reader queries, an
 * admin queries and administers; each refusal is PERMISSION_DENIED naming the role needed. A
 * `client` certificate from before roles still reads but no longer administers, and says how to
 * get an admin one. The CLI presents the reader for reads and the admin for admin commands.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFile, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { AgentMessageSchema, AgentService } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { AdminService, GraphEvent_Type, QueryService, type GraphEvent } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { loadTls, type TlsMaterial } from "../../common/certs.js";
import { callBidi, callServerStream, callUnary } from "../../common/grpc.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { policyFromInit, type RunningAggregator } from "../../aggregator/index.js";
import { startMtlsAggregator, type MtlsAggregator } from "./mtls-aggregator.js";

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, "dist/cli/main.js");

/** The CLI pair an older `certs init` made (OU=client), signed by the same CA; openssl stands in for the old code. */
async function legacyClientCert(tlsDir: string): Promise<TlsMaterial> {
  const ext = join(tlsDir, "client.ext");
  await writeFile(ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=clientAuth\n");
  const f = (n: string) => join(tlsDir, n);
  await run("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/O=shadowlayer/OU=client/CN=shadowlayer-cli", "-keyout", f("client.key"), "-out", f("client.csr")]);
  await run("openssl", ["x509", "-req", "-in", f("client.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-set_serial", "0x5a17", "-days", "2", "-sha256", "-extfile", ext, "-out", f("client.crt")]);
  await rm(f("client.csr"));
  await rm(ext);
  return { ca: await readFile(f("ca.crt")), cert: await readFile(f("client.crt")), key: await readFile(f("client.key")) };
}

describe("certificate roles", () => {
  let m: MtlsAggregator;
  let dir: string;
  let tlsDir: string;
  let agg: RunningAggregator;
  let address: string;
  const tls = {} as Record<"agent" | "reader" | "admin" | "aggregator" | "client", TlsMaterial>;
  const logs: Array<{ msg: string; service?: string }> = [];

  const client = (svc: typeof QueryService | typeof AdminService | typeof AgentService, who: keyof typeof tls) => m.client(svc, tls[who]);
  const listContainers = (who: keyof typeof tls) => callUnary(client(QueryService, who), QueryService.method.listContainers, {});
  const listPolicies = (who: keyof typeof tls) => callUnary(client(AdminService, who), AdminService.method.listPolicies, {});
  /** The first event of a graph watch, or the status that ended it. */
  const watchFirst = (who: keyof typeof tls) =>
    new Promise<GraphEvent | grpc.ServiceError>((resolve) => {
      const s = callServerStream(client(QueryService, who), QueryService.method.watchGraphs, {});
      s.on("data", (ev: GraphEvent) => {
        resolve(ev);
        s.cancel();
      });
      s.on("error", (err: grpc.ServiceError) => resolve(err));
    });
  const denied = (details: string) => (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.equal(err.details, details);
    return true;
  };
  const queryNeeds = (cn: string, role: string) => `QueryService needs a reader or admin certificate (OU=reader or OU=admin); this certificate (CN=${cn}) is ${role}`;
  const adminNeeds = (cn: string, role: string) => `AdminService needs an admin certificate (OU=admin); this certificate (CN=${cn}) is ${role}`;

  before(async () => {
    const log = pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line) as { msg: string }) });
    m = await startMtlsAggregator({ nodes: ["node-a"], log });
    ({ dir, tlsDir, agg, address } = m);
    tls.agent = await loadTls(tlsDir, { role: "agent", node: "node-a" });
    tls.reader = await loadTls(tlsDir, { role: "reader" });
    tls.admin = await loadTls(tlsDir, { role: "admin" });
    tls.aggregator = await loadTls(tlsDir, { role: "aggregator" });
    tls.client = await legacyClientCert(tlsDir);
  });
  after(() => m.stop());

  it("refuses an agent certificate on QueryService, unary and streams, and on AdminService", async () => {
    await assert.rejects(listContainers("agent"), denied(queryNeeds("node-a", "agent")));
    await assert.rejects(callUnary(client(QueryService, "agent"), QueryService.method.listScores, {}), denied(queryNeeds("node-a", "agent")));
    const watched = await watchFirst("agent");
    assert.ok(watched instanceof Error, "the watch ended instead of streaming graphs");
    denied(queryNeeds("node-a", "agent"))(watched as grpc.ServiceError);
    await assert.rejects(listPolicies("agent"), denied(adminNeeds("node-a", "agent")));
    await assert.rejects(callUnary(client(AdminService, "agent"), AdminService.method.refreshFeeds, {}), denied(adminNeeds("node-a", "agent")));
  });

  it("refuses the aggregator's own certificate as a client", async () => {
    await assert.rejects(listContainers("aggregator"), denied(queryNeeds("shadowlayer-aggregator", "aggregator")));
    await assert.rejects(listPolicies("aggregator"), denied(adminNeeds("shadowlayer-aggregator", "aggregator")));
  });

  it("accepts a reader on QueryService and refuses it on AdminService, which then changes nothing", async () => {
    assert.deepEqual((await listContainers("reader")).containers, []);
    const watched = await watchFirst("reader");
    assert.ok(!(watched instanceof Error), `the watch streams: ${String(watched)}`);
    assert.equal(watched.type, GraphEvent_Type.SNAPSHOT_DONE);
    await assert.rejects(listPolicies("reader"), denied(adminNeeds("shadowlayer-reader", "reader")));
    const policy = policyFromInit({ name: "sneaky", rebuild_threshold: 100, switch_threshold: 100 });
    await assert.rejects(callUnary(client(AdminService, "reader"), AdminService.method.setPolicy, { policy }), denied(adminNeeds("shadowlayer-reader", "reader")));
    assert.deepEqual(agg.scores.listPolicies().map((p) => p.name), ["default"]);
    // Switchovers are an admin's: a reader reads their history only.
    await assert.rejects(callUnary(client(AdminService, "reader"), AdminService.method.switchover, { container: "anything" }), denied(adminNeeds("shadowlayer-reader", "reader")));
    assert.deepEqual((await callUnary(client(QueryService, "reader"), QueryService.method.listSwitchovers, {})).records, []);
  });

  it("accepts an admin on QueryService and AdminService", async () => {
    assert.match(new X509Certificate(tls.admin.cert).subject, /^OU=admin$/m, "the admin.crt that initCerts wrote holds the admin role");
    assert.deepEqual((await listContainers("admin")).containers, []);
    const watched = await watchFirst("admin");
    assert.ok(!(watched instanceof Error), `the watch streams: ${String(watched)}`);
    assert.deepEqual((await listPolicies("admin")).policies.map((p) => p.name), ["default"]);
    const policy = policyFromInit({ name: "prod", labels: { env: "prod" }, rebuild_threshold: 40, switch_threshold: 80 });
    assert.equal((await callUnary(client(AdminService, "admin"), AdminService.method.setPolicy, { policy })).name, "prod");
    await callUnary(client(AdminService, "admin"), AdminService.method.deletePolicy, { name: "prod" });
  });

  it("lets only an agent certificate open an agent stream, and only for its own node", async () => {
    const open = (who: keyof typeof tls, node: string) =>
      new Promise<"acked" | grpc.ServiceError>((resolve) => {
        const call = callBidi(client(AgentService, who), AgentService.method.connect);
        call.on("data", () => {
          resolve("acked");
          call.end();
        });
        call.on("error", (err: grpc.ServiceError) => resolve(err));
        call.write(create(AgentMessageSchema, { seq: 1n, body: { case: "hello", value: { node, agentVersion: "test" } } }));
      });
    const agentNeeds = (cn: string, role: string) => `AgentService needs an agent certificate (OU=agent); this certificate (CN=${cn}) is ${role}`;
    denied(agentNeeds("shadowlayer-reader", "reader"))((await open("reader", "shadowlayer-reader")) as grpc.ServiceError);
    denied(agentNeeds("shadowlayer-admin", "admin"))((await open("admin", "shadowlayer-admin")) as grpc.ServiceError);
    denied("certificate is for node node-a, hello says node-b")((await open("agent", "node-b")) as grpc.ServiceError);
    assert.equal(await open("agent", "node-a"), "acked");
  });

  it("admits a `client` certificate from before roles as a reader only, and logs once how to get an admin one", async () => {
    assert.deepEqual((await listContainers("client")).containers, []);
    await listContainers("client");
    await assert.rejects(
      listPolicies("client"),
      denied("AdminService needs an admin certificate (OU=admin); this `client` certificate from before roles may only read: run `shadowlayer certs init` again to add admin.crt"),
    );
    const told = logs.filter((l) => /`client` certificate from before roles is admitted as a reader only; run `shadowlayer certs init` again/.test(l.msg));
    assert.equal(told.length, 1, "one line for the certificate, not one per call");
    assert.equal(told[0]?.service, "shadowlayer.v1.QueryService");
  });

  describe("the CLI", () => {
    const cli = async (tlsAt: string, ...args: string[]) => (await run(process.execPath, [CLI, ...args, "--aggregator", address, "--tls-dir", tlsAt])).stdout;
    const certsInit = async (tlsAt: string, ...args: string[]) => (await run(process.execPath, [CLI, "certs", "init", "--tls-dir", tlsAt, ...args])).stdout;
    /** The CLI's one-line failure (exit 1, stderr). */
    const cliFails = async (tlsAt: string, ...args: string[]) => {
      const err = await cli(tlsAt, ...args).then(
        () => assert.fail(`${args.join(" ")} succeeded`),
        (e: { code: number; stderr: string }) => e,
      );
      assert.equal(err.code, 1);
      return err.stderr;
    };
    /** A TLS directory holding ca.crt and the named files of the real one, under other names when asked. */
    const subset = async (name: string, files: Record<string, string>) => {
      const d = join(dir, name);
      await mkdir(d);
      await copyFile(join(tlsDir, "ca.crt"), join(d, "ca.crt"));
      for (const [to, from] of Object.entries(files)) await copyFile(join(tlsDir, from), join(d, to));
      return d;
    };

    it("certs init writes a reader and an admin certificate, keys 0600, and keeps what exists", async () => {
      const fresh = join(dir, "fresh-tls");
      const made = JSON.parse(await certsInit(fresh, "--node", "node-z", "--json")) as { created: string[]; obsolete: string[] };
      assert.deepEqual(made.created.sort(), ["admin.crt", "agent-node-z.crt", "aggregator.crt", "ca.crt", "cosign.pub", "reader.crt"]);
      // The image-signing key pair: the private half as private as the TLS keys.
      assert.equal((await stat(join(fresh, "cosign.key"))).mode & 0o777, 0o600);
      assert.match(await readFile(join(fresh, "cosign.pub"), "utf8"), /^-----BEGIN PUBLIC KEY-----/);
      for (const role of ["reader", "admin"]) {
        assert.match(new X509Certificate(await readFile(join(fresh, `${role}.crt`))).subject, new RegExp(`^OU=${role}$`, "m"));
        assert.equal((await stat(join(fresh, `${role}.key`))).mode & 0o777, 0o600);
      }
      // The directory of an older `certs init` (with its client pair): everything is kept, and the client pair is named as unused.
      const again = await certsInit(tlsDir, "--node", "node-a");
      assert.match(again, /created: -\n/);
      assert.match(again, /kept: +ca\.crt, aggregator\.crt, reader\.crt, admin\.crt, agent-node-a\.crt, cosign\.pub\n/);
      assert.match(again, /no longer used by the CLI: client\.crt \(an older all-purpose certificate, now admitted as a reader only/);
    });

    it("runs read commands with the reader and admin commands with the admin that certs init wrote", async () => {
      // What a workstation receives: the CA certificate and the two CLI pairs, nothing older.
      const cliTls = await subset("cli-tls", { "reader.crt": "reader.crt", "reader.key": "reader.key", "admin.crt": "admin.crt", "admin.key": "admin.key" });
      assert.deepEqual(JSON.parse(await cli(cliTls, "containers", "--json")), []);
      assert.deepEqual(JSON.parse(await cli(cliTls, "feeds", "--json")), []);
      assert.deepEqual(JSON.parse(await cli(cliTls, "feeds", "--refresh", "--json")), []);
      assert.match(await cli(cliTls, "policy", "set", "staging", "--label", "env=staging", "--rebuild", "50", "--switch", "70"), /policy staging set/);
      assert.deepEqual((JSON.parse(await cli(cliTls, "policy", "list", "--json")) as Array<{ name: string }>).map((p) => p.name), ["staging", "default"]);
      await cli(cliTls, "policy", "delete", "staging");
      assert.deepEqual(agg.scores.listPolicies().map((p) => p.name), ["default"]);
    });

    it("reads with only the reader pair, and says the admin certificate is missing for admin commands", async () => {
      const readerOnly = await subset("reader-only", { "reader.crt": "reader.crt", "reader.key": "reader.key" });
      assert.deepEqual(JSON.parse(await cli(readerOnly, "containers", "--json")), []);
      for (const args of [["policy", "list"], ["policy", "delete", "x"], ["feeds", "--refresh"]]) {
        const said = await cliFails(readerOnly, ...args);
        assert.match(said, /^shadowlayer: cannot read .*reader-only\/admin\.crt: admin commands \(policy, feeds --refresh\) need the admin certificate; run `shadowlayer certs init`/);
      }
    });

    it("administers with only the admin pair, and says the reader certificate is missing for reads", async () => {
      const adminOnly = await subset("admin-only", { "admin.crt": "admin.crt", "admin.key": "admin.key" });
      assert.deepEqual((JSON.parse(await cli(adminOnly, "policy", "list", "--json")) as Array<{ name: string }>).map((p) => p.name), ["default"]);
      assert.match(await cliFails(adminOnly, "containers"), /^shadowlayer: cannot read .*admin-only\/reader\.crt: read commands need the reader certificate; run `shadowlayer certs init`/);
    });

    it("explains the aggregator's refusal when the file holds the wrong role", async () => {
      const wrong = await subset("wrong-role", { "reader.crt": "agent-node-a.crt", "reader.key": "agent-node-a.key" });
      assert.equal(
        (await cliFails(wrong, "containers")).trim(),
        `shadowlayer: the aggregator at ${address} refused: ${queryNeeds("node-a", "agent")}`,
      );
    });
  });
});
