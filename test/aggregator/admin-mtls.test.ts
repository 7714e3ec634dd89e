/**
 * AdminService over real mTLS (every other admin test runs without TLS): an admin certificate
 * sets, lists and deletes policies, through the API and the CLI; an agent certificate is refused
 * on every admin call and changes nothing; a connection without a certificate is refused by the
 * TLS handshake. (Which role reaches which service is roles.test.ts.)
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { AdminService } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { loadTls, type TlsMaterial } from "../../common/certs.js";
import { callUnary, channelCredentials } from "../../common/grpc.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { policyFromInit, type RunningAggregator } from "../../aggregator/index.js";
import { startMtlsAggregator, type MtlsAggregator } from "./mtls-aggregator.js";
import { refusedWhileServed } from "./tls-refusal.js";

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, "dist/cli/main.js");

describe("AdminService over mTLS", () => {
  let m: MtlsAggregator;
  let tlsDir: string;
  let agg: RunningAggregator;
  let address: string;
  let adminTls: TlsMaterial;
  let agentTls: TlsMaterial;

  const admin = (creds: grpc.ChannelCredentials) => m.client(AdminService, creds);
  const names = async (c: grpc.Client) => (await callUnary(c, AdminService.method.listPolicies, {})).policies.map((p) => p.name);

  before(async () => {
    m = await startMtlsAggregator({ nodes: ["node-a"] });
    ({ tlsDir, agg, address } = m);
    adminTls = await loadTls(tlsDir, { role: "admin" });
    agentTls = await loadTls(tlsDir, { role: "agent", node: "node-a" });
  });
  after(() => m.stop());

  it("lets an admin certificate set, list and delete a policy", async () => {
    const c = admin(channelCredentials(adminTls));
    assert.deepEqual(await names(c), ["default"]);
    const policy = policyFromInit({ name: "prod", labels: { env: "prod" }, rebuild_threshold: 40, switch_threshold: 80, order: 5 });
    const set = await callUnary(c, AdminService.method.setPolicy, { policy });
    assert.equal(set.rebuildThreshold, 40);
    const listed = (await callUnary(c, AdminService.method.listPolicies, {})).policies;
    assert.deepEqual(listed.map((p) => [p.name, p.labels, p.rebuildThreshold, p.switchThreshold, p.order]), [
      ["prod", { env: "prod" }, 40, 80, 5],
      ["default", {}, 60, 85, 1_000_000],
    ]);
    assert.equal(agg.scores.policyFor({ env: "prod" }).name, "prod", "the aggregator decides by it");
    await callUnary(c, AdminService.method.deletePolicy, { name: "prod" });
    assert.deepEqual(await names(c), ["default"]);
  });

  it("answers an invalid policy with INVALID_ARGUMENT naming the key", async () => {
    const c = admin(channelCredentials(adminTls));
    const bad = { ...policyFromInit({ name: "prod", rebuild_threshold: 40, switch_threshold: 80 }), rebuildThreshold: 140 };
    await assert.rejects(callUnary(c, AdminService.method.setPolicy, { policy: bad }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.details, "policy.rebuild_threshold: expected a number from 0 to 100, got 140");
      return true;
    });
    assert.deepEqual(await names(c), ["default"], "nothing was stored");
  });

  it("refuses an agent certificate on every admin call, and it changes nothing", async () => {
    const c = admin(channelCredentials(agentTls));
    const denied = (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.PERMISSION_DENIED);
      assert.equal(err.details, "AdminService needs an admin certificate (OU=admin); this certificate (CN=node-a) is agent");
      return true;
    };
    const policy = policyFromInit({ name: "sneaky", rebuild_threshold: 100, switch_threshold: 100 });
    await assert.rejects(callUnary(c, AdminService.method.setPolicy, { policy }), denied);
    await assert.rejects(callUnary(c, AdminService.method.listPolicies, {}), denied);
    await assert.rejects(callUnary(c, AdminService.method.deletePolicy, { name: "sneaky" }), denied);
    await assert.rejects(callUnary(c, AdminService.method.refreshFeeds, {}), denied);
    assert.deepEqual(await names(admin(channelCredentials(adminTls))), ["default"], "the agent's SetPolicy stored nothing");
  });

  it("refuses a connection without a certificate while serving an admin certificate", async () => {
    const bad = admin(grpc.credentials.createSsl(adminTls.ca));
    const good = admin(channelCredentials(adminTls));
    const err = await refusedWhileServed(() => names(bad), () => names(good));
    assert.match(err.details, /certificate required/, "the TLS handshake's refusal, not a dead server");
  });

  it("lets the CLI change policies with the admin certificate from its TLS directory", async () => {
    const cli = async (...args: string[]) => (await run(process.execPath, [CLI, ...args, "--aggregator", address, "--tls-dir", tlsDir])).stdout;
    assert.match(await cli("policy", "set", "staging", "--label", "env=staging", "--rebuild", "50", "--switch", "70"), /policy staging set: rebuild at 50, switch at 70/);
    assert.deepEqual((JSON.parse(await cli("policy", "list", "--json")) as Array<{ name: string }>).map((p) => p.name), ["staging", "default"]);
    await cli("policy", "delete", "staging");
    assert.deepEqual(await names(admin(channelCredentials(adminTls))), ["default"]);
  });
});
