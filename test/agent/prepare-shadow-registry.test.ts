/**
 * PrepareShadow from a real registry (TLS, basic auth): the shadow pushed by the engine, its cosign
 * signature stored beside it; the agent reads and checks the stored signature before it pulls by
 * digest with the credentials. A tampered stored signature or a missing one is refused with nothing
 * pulled; a pulled image whose id is not the signed one is removed again. Skipped while the
 * registry client and its test harness are not in the tree.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { AgentCommands, registrySignatures } from "../../agent/actions/agent-commands.js";
import { RegistryClient } from "../../common/registry-client.js";
import { storeSignature } from "../../common/registry-signature.js";
import { startRegistry, type TestRegistry } from "../harness/registry.js";
import type { StoredSignatureReader } from "../../agent/actions/prepare-shadow.js";
import { SHADOW_CONTAINER_LABELS } from "../../agent/actions/shadow-containers.js";
import { generateSigningKeys, signingPayload, signPayload } from "../../common/cosign.js";
import { silentLogger } from "../../common/log.js";
import { CommandStatus, PrepareShadowSchema } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { DEMO_LABEL } from "../../cli/demo-images.js";
import { cleanupContainers, TEST_LABEL, testEngine } from "../harness/engine.js";
import { tempDir } from "../harness/temp-dir.js";

const log = silentLogger();
const keys = generateSigningKeys();
const tmp = tempDir("sl-shadow-reg-");
const REPO = "shadows/app";

describe("PrepareShadow from a registry", () => {
  let docker: Docker;
  let registry: TestRegistry;
  let keyFile: string;
  const local = [`shadowlayer-test/reg-shadow:${process.pid}-a`, `shadowlayer-test/reg-shadow:${process.pid}-b`];
  const ids: string[] = [];
  const pushed: Array<{ ref: string; digest: string }> = [];

  /** The agent's own reader of stored signatures. */
  const reader: StoredSignatureReader = registrySignatures;

  async function follow(stream: NodeJS.ReadableStream): Promise<void> {
    await new Promise<void>((resolve, reject) =>
      docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string }>) => {
        const bad = out?.find((o) => o.error !== undefined);
        if (err) reject(err);
        else if (bad) reject(new Error(bad.error));
        else resolve();
      }),
    );
  }

  before(async () => {
    const e = await testEngine();
    docker = e.docker;
    registry = await startRegistry();
    keyFile = join(tmp.path, "cosign.pub");
    await writeFile(keyFile, keys.publicKeyPem);
    const client = new RegistryClient({ host: registry.host, ca: registry.ca, auth: registry.auth });
    try {
      for (const [i, tag] of local.entries()) {
        const pk = tar.pack();
        pk.entry({ name: "Dockerfile" }, `FROM ${e.app}\nLABEL org.shadowlayer.test-shadow=reg-${i}-${process.pid}\n`);
        pk.finalize();
        await follow(await docker.buildImage(Readable.from(pk as AsyncIterable<Buffer>), { t: tag, networkmode: "host", rm: true, forcerm: true }));
        ids.push((await docker.getImage(tag).inspect()).Id);
        const remote = `${registry.host}/${REPO}`;
        await docker.getImage(tag).tag({ repo: remote, tag: `t${i}` });
        await follow((await docker.getImage(`${remote}:t${i}`).push({ authconfig: { ...registry.auth, serveraddress: registry.host } })) as NodeJS.ReadableStream);
        const digest = (await client.getManifest(REPO, `t${i}`)).digest;
        pushed.push({ ref: `${remote}@${digest}`, digest });
        // Only the shadow's local tag stays: the registry reference must be pulled.
        await docker.getImage(`${remote}:t${i}`).remove();
      }
      const [a] = pushed as [{ ref: string; digest: string }];
      const payload = signingPayload({ dockerReference: `${registry.host}/${REPO}`, digest: a.digest });
      await storeSignature(client, REPO, a.digest, payload, signPayload(payload, keys.privateKeyPem));
      // The second shadow's stored signature is made with another key.
      const [, b] = pushed as [unknown, { ref: string; digest: string }];
      const other = signingPayload({ dockerReference: `${registry.host}/${REPO}`, digest: b.digest });
      await storeSignature(client, REPO, b.digest, other, signPayload(other, generateSigningKeys().privateKeyPem));
    } finally {
      client.close();
    }
  });

  after(async () => {
    await cleanupContainers(docker);
    for (const r of [...pushed.map((x) => x.ref), ...local]) await docker.getImage(r).remove().catch(() => undefined);
    await registry?.close();
  });

  async function original(name: string): Promise<string> {
    const c = await docker.createContainer({
      name,
      Image: local[0],
      Cmd: ["/opt/app/bin/busybox", "sleep", "3600"],
      Labels: { [TEST_LABEL]: String(process.pid), [DEMO_LABEL]: "test" },
      HostConfig: { NetworkMode: "host" },
    });
    await c.start();
    return c.id;
  }

  const present = (ref: string) => docker.getImage(ref).inspect().then(() => true, () => false);
  const shadowsOf = async (id: string) => (await docker.listContainers({ all: true, filters: { label: [`${SHADOW_CONTAINER_LABELS.shadowOf}=${id}`] } })).length;

  it("pulls by digest with the credentials after the stored signature verifies, and creates the shadow", async () => {
    const [a] = pushed as [{ ref: string; digest: string }];
    const id = await original(`sl-reg-ok-${process.pid}`);
    const handler = new AgentCommands({ docker, log, signingKeyPub: keyFile, registryAuth: registry.auth, registryCa: registry.ca, storedSignatures: reader });
    assert.equal(await present(a.ref), false, "not here before");
    const r = await handler.prepareShadow(create(PrepareShadowSchema, { containerId: id, shadowImage: a.ref, imageId: ids[0] ?? "", manifestDigest: a.digest, jobId: "job-r" }), "r1");
    assert.equal(r.status, CommandStatus.OK, r.message);
    assert.equal(await present(a.ref), true, "pulled");
    const s = await docker.getContainer(r.shadowContainerId ?? "").inspect();
    assert.deepEqual([s.State.Status, s.Image, s.Config.Image, s.Config.Labels[SHADOW_CONTAINER_LABELS.shadowImage]], ["created", ids[0], a.ref, a.ref]);
  });

  it("refuses a stored signature made with another key, or none, before pulling; a wrong image id removes what it pulled", async () => {
    const [a, b] = pushed as [{ ref: string; digest: string }, { ref: string; digest: string }];
    const id = await original(`sl-reg-bad-${process.pid}`);
    const handler = new AgentCommands({ docker, log, signingKeyPub: keyFile, registryAuth: registry.auth, registryCa: registry.ca, storedSignatures: reader });
    const act = (ref: string, digest: string, imageId: string) => handler.prepareShadow(create(PrepareShadowSchema, { containerId: id, shadowImage: ref, imageId, manifestDigest: digest, jobId: "job-r" }), "r2");

    const otherKey = await act(b.ref, b.digest, ids[1] ?? "");
    assert.equal(otherKey.status, CommandStatus.REJECTED, otherKey.message);
    assert.match(otherKey.message, /does not verify/);
    assert.equal(await present(b.ref), false, "nothing pulled");

    const unsignedDigest = `sha256:${"6".repeat(64)}`;
    const unsigned = await act(`${registry.host}/${REPO}@${unsignedDigest}`, unsignedDigest, ids[1] ?? "");
    assert.equal(unsigned.status, CommandStatus.REJECTED, unsigned.message);
    assert.match(unsigned.message, /has no signature/);

    await docker.getImage(a.ref).remove().catch(() => undefined);
    const wrongId = await act(a.ref, a.digest, ids[1] ?? "");
    assert.equal(wrongId.status, CommandStatus.REJECTED, wrongId.message);
    assert.match(wrongId.message, /the pulled image is sha256:[0-9a-f]{64}, not the signed/);
    assert.equal(await present(a.ref), false, "the refused pull is removed");
    assert.equal(await present(local[0] ?? ""), true, "the same image under another name stays");
    assert.equal(await shadowsOf(id), 0);
  });

  it("answers FAILED when the registry refuses the credentials (for the aggregator to retry)", async () => {
    const [a] = pushed as [{ ref: string; digest: string }];
    const id = await original(`sl-reg-auth-${process.pid}`);
    const handler = new AgentCommands({ docker, log, signingKeyPub: keyFile, registryAuth: { username: registry.auth.username, password: "wrong" }, registryCa: registry.ca, storedSignatures: reader });
    const r = await handler.prepareShadow(create(PrepareShadowSchema, { containerId: id, shadowImage: a.ref, imageId: ids[0] ?? "", manifestDigest: a.digest, jobId: "job-r" }), "r3");
    assert.equal(r.status, CommandStatus.FAILED, r.message);
    assert.match(r.message, /refused the credentials/);
    assert.equal(await shadowsOf(id), 0);
  });
});
