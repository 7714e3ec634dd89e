/**
 * PrepareShadow on a real engine through the real level journal: a signed local shadow becomes a
 * created (never started) container with the original's configuration; a tampered signature, a
 * payload naming another digest or a wrong image id leaves no container; the same shadow again
 * keeps its container, a newer one replaces it; the original's removal (live, or while the agent
 * was down) removes its shadow. The registry path's checks are exercised up to the pull.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { AgentCommands } from "../../agent/actions/agent-commands.js";
import { CommandJournal } from "../../agent/actions/command-journal.js";
import { LOCAL_REFERENCE, parseDigestReference, REBUILT_AT_LABEL, verifyShadowSignature } from "../../agent/actions/prepare-shadow.js";
import { SHADOW_CONTAINER_LABELS, shadowCreateOptions, shadowName } from "../../agent/actions/shadow-containers.js";
import { AgentState } from "../../agent/state/agent-state.js";
import { generateSigningKeys, signingPayload, signPayload } from "../../common/cosign.js";
import { silentLogger } from "../../common/log.js";
import { CommandSchema, CommandStatus, PrepareShadowSchema, type Command, type PrepareShadow } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { DEMO_LABEL } from "../../cli/demo-images.js";
import { cleanupContainers, TEST_LABEL, testEngine, waitFor } from "../harness/engine.js";
import { tempDir } from "../harness/temp-dir.js";

const log = silentLogger();
const keys = generateSigningKeys();
const tmp = tempDir("sl-shadow-");
let docker: Docker;
let app: string;
/** Two shadow images: the app with one label more, each run's own (so removing them touches nobody else's). */
const shadowTags = ["a", "b", "newer", "older"].map((t) => `shadowlayer-test/shadow:${process.pid}-${t}`);
const shadowIds: string[] = [];
let keyFile: string;
const namedVolume = `sl-shadow-test-${process.pid}`;
/** Volumes the tests made, removed after their containers. */
const volumes = new Set<string>([namedVolume]);

async function buildShadow(tag: string, mark: string, rebuiltAt?: string): Promise<string> {
  const p = tar.pack();
  p.entry({ name: "Dockerfile" }, `FROM ${app}\nLABEL org.shadowlayer.test-shadow=${mark}${rebuiltAt ? ` ${REBUILT_AT_LABEL}=${rebuiltAt}` : ""}\n`);
  p.finalize();
  const stream = await docker.buildImage(Readable.from(p as AsyncIterable<Buffer>), { t: tag, networkmode: "host", rm: true, forcerm: true });
  await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
  return (await docker.getImage(tag).inspect()).Id;
}

/** An original with settings worth copying; running, host network, labelled for cleanup. */
async function startOriginal(name: string, volumes = false): Promise<Docker.ContainerInspectInfo> {
  const c = await docker.createContainer({
    name,
    ...(volumes ? { Volumes: { "/anon": {} } } : {}),
    Image: app,
    Cmd: ["/opt/app/bin/busybox", "sleep", "3600"],
    Env: ["APP_FLAVOUR=blue", "APP_MODE=prod"],
    WorkingDir: "/srv/www",
    Labels: { "app.role": "web", [TEST_LABEL]: String(process.pid), [DEMO_LABEL]: "test" },
    Healthcheck: { Test: ["CMD", "/bin/true"], Interval: 30_000_000_000, Timeout: 5_000_000_000, Retries: 3 },
    StopSignal: "SIGINT",
    HostConfig: {
      NetworkMode: "host",
      Binds: [`${tmp.path}:/data:ro`],
      ...(volumes ? { Mounts: [{ Type: "volume" as const, Source: namedVolume, Target: "/named" }] } : {}),
      RestartPolicy: { Name: "on-failure", MaximumRetryCount: 2 },
      Memory: 64 * 1024 * 1024,
      CapDrop: ["NET_RAW"],
    },
  });
  await c.start();
  return c.inspect();
}

/** A local-only PrepareShadow for `imageId`, signed (or as `sign` says). */
function localCommand(id: string, containerId: string, imageId: string, o: { signedDigest?: string; signature?: (s: string) => string; job?: string } = {}): Command {
  const payload = signingPayload({ dockerReference: LOCAL_REFERENCE, digest: o.signedDigest ?? imageId });
  const signature = signPayload(payload, keys.privateKeyPem);
  const action = create(PrepareShadowSchema, {
    containerId,
    shadowImage: imageId,
    imageId,
    localOnly: true,
    signaturePayload: payload,
    signature: o.signature ? o.signature(signature) : signature,
    jobId: o.job ?? "job-1",
    reason: "CVE-2024-0727",
  });
  return create(CommandSchema, { id, action: { case: "prepareShadow", value: action } });
}

async function shadowsOf(originalId: string): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`${SHADOW_CONTAINER_LABELS.shadowOf}=${originalId}`] } });
}

/** Flips one bit of a base64 signature's decoded bytes (still valid base64, no longer the signature). */
const flipByte = (b64: string): string => {
  const b = Buffer.from(b64, "base64");
  b[10] = (b[10] ?? 0) ^ 0x01;
  return b.toString("base64");
};

before(async () => {
  ({ docker, app } = await testEngine());
  shadowIds.push(
    await buildShadow(shadowTags[0] ?? "", `a-${process.pid}`),
    await buildShadow(shadowTags[1] ?? "", `b-${process.pid}`),
    await buildShadow(shadowTags[2] ?? "", `n-${process.pid}`, "2026-11-02T00:00:00Z"),
    await buildShadow(shadowTags[3] ?? "", `o-${process.pid}`, "2026-11-01T00:00:00Z"),
  );
  keyFile = join(tmp.path, "cosign.pub");
  await writeFile(keyFile, keys.publicKeyPem);
});

after(async () => {
  await cleanupContainers(docker);
  for (const t of shadowTags) await docker.getImage(t).remove().catch(() => undefined);
  for (const v of volumes) await docker.getVolume(v).remove().catch(() => undefined);
});

describe("PrepareShadow through the journal (local shadows)", () => {
  let state: AgentState;
  let journal: CommandJournal;
  let handler: AgentCommands;
  const suffix = `${process.pid}-${Date.now().toString(36)}`;

  before(async () => {
    state = new AgentState(join(tmp.path, "state"), log);
    await state.start();
    handler = new AgentCommands({ docker, log, signingKeyPub: keyFile });
    journal = new CommandJournal(state.commands, handler, { log });
    await journal.start();
  });
  after(async () => {
    await journal.stop();
    await state.stop();
  });

  it("creates, without starting, a shadow with the original's configuration; a repeat is answered from the journal", async () => {
    const original = await startOriginal(`sl-web-${suffix}`, true);
    const anonymous = original.Mounts.find((m) => m.Destination === "/anon")?.Name ?? "";
    volumes.add(anonymous);
    const [shadowA] = shadowIds as [string];
    const r = await journal.run(localCommand("prep-1", original.Id, shadowA));
    assert.equal(r.status, CommandStatus.OK, r.message);
    assert.match(r.message, new RegExp(`sl-web-${suffix}-shadow`));
    const s = await docker.getContainer(r.shadowContainerId).inspect();
    assert.equal(s.Name, `/sl-web-${suffix}-shadow`);
    assert.equal(s.State.Status, "created");
    assert.equal(s.State.Running, false);
    assert.equal(s.Image, shadowA);
    assert.deepEqual(s.Config.Cmd, original.Config.Cmd);
    assert.equal(s.Config.WorkingDir, "/srv/www");
    for (const e of ["APP_FLAVOUR=blue", "APP_MODE=prod"]) assert.ok(s.Config.Env.includes(e), `env ${e}`);
    assert.deepEqual(s.HostConfig.Binds, [...(original.HostConfig.Binds ?? []), `${anonymous}:/anon`], "the anonymous volume is shared by name");
    assert.deepEqual(
      s.Mounts.filter((m) => m.Type === "volume").map((m) => [m.Name, m.Destination]).sort(),
      [[anonymous, "/anon"], [namedVolume, "/named"]],
      "volumes keep their names",
    );
    assert.deepEqual(s.HostConfig.RestartPolicy, original.HostConfig.RestartPolicy);
    assert.equal(s.HostConfig.Memory, 64 * 1024 * 1024);
    assert.deepEqual(s.HostConfig.CapDrop, ["NET_RAW"]);
    assert.equal(s.HostConfig.NetworkMode, "host");
    assert.deepEqual(s.Config.Healthcheck, original.Config.Healthcheck);
    assert.equal((s.Config as { StopSignal?: string }).StopSignal, "SIGINT");
    assert.equal(s.Config.Labels["app.role"], "web");
    assert.equal(s.Config.Labels[SHADOW_CONTAINER_LABELS.shadowOf], original.Id);
    assert.equal(s.Config.Labels[SHADOW_CONTAINER_LABELS.job], "job-1");
    assert.equal(s.Config.Labels[SHADOW_CONTAINER_LABELS.shadowImage], shadowA);
    assert.equal(s.Config.Labels["org.shadowlayer.test-shadow"], `a-${process.pid}`, "the shadow image's own labels show through");

    const linked = shadowCreateOptions({ ...original, HostConfig: { ...original.HostConfig, Links: ["/db-1:/sl-web/db"] } }, undefined, { image: shadowA, reference: shadowA, job: "j" });
    assert.deepEqual(linked.HostConfig?.Links, ["db-1:db"], "a legacy link in the form create takes");

    const repeat = await journal.run(localCommand("prep-1", original.Id, shadowIds[1] ?? ""));
    assert.deepEqual([repeat.status, repeat.message, repeat.shadowContainerId], [r.status, r.message, r.shadowContainerId], "the first answer, from the journal");
    assert.equal(journal.entry("prep-1")?.state, "finished");
    const again = await journal.run(localCommand("prep-2", original.Id, shadowA));
    assert.equal(again.status, CommandStatus.OK, again.message);
    assert.equal(again.shadowContainerId, r.shadowContainerId, "the same shadow again keeps its container");
    assert.equal((await shadowsOf(original.Id)).length, 1);

    const newer = await journal.run(localCommand("prep-3", original.Id, shadowIds[1] ?? "", { job: "job-2" }));
    assert.equal(newer.status, CommandStatus.OK, newer.message);
    assert.notEqual(newer.shadowContainerId, r.shadowContainerId);
    const list = await shadowsOf(original.Id);
    assert.deepEqual(list.map((c) => c.Id), [newer.shadowContainerId], "the older shadow is gone");
    const n = await docker.getContainer(newer.shadowContainerId).inspect();
    assert.deepEqual([n.Image, n.State.Status, n.Name, n.Config.Labels[SHADOW_CONTAINER_LABELS.job]], [shadowIds[1], "created", `/sl-web-${suffix}-shadow`, "job-2"]);
    const ofShadow = await journal.run(localCommand("prep-4", newer.shadowContainerId, shadowA));
    assert.equal(ofShadow.status, CommandStatus.REJECTED);
    assert.match(ofShadow.message, /is itself a shadow, not started/);
  });

  it("keeps a prepared shadow over one its rebuilt-at label says is older", async () => {
    const original = await startOriginal(`sl-order-${suffix}`);
    const [, , newer, older] = shadowIds as [string, string, string, string];
    const first = await journal.run(localCommand("order-1", original.Id, newer));
    assert.equal(first.status, CommandStatus.OK, first.message);
    const stale = await journal.run(localCommand("order-2", original.Id, older));
    assert.equal(stale.status, CommandStatus.REJECTED, stale.message);
    assert.match(stale.message, /rebuilt at 2026-11-01T00:00:00.000Z\) is older than the prepared .*2026-11-02/);
    assert.deepEqual((await shadowsOf(original.Id)).map((c) => c.Id), [first.shadowContainerId]);
  });

  it("refuses a tampered signature, a payload naming another digest, a wrong or absent image, and leaves no container", async () => {
    const original = await startOriginal(`sl-refused-${suffix}`);
    const [a, b] = shadowIds as [string, string];
    const cases: Array<[string, Command, RegExp]> = [
      ["flipped", localCommand("bad-1", original.Id, a, { signature: flipByte }), /does not verify/],
      ["other digest", localCommand("bad-2", original.Id, a, { signedDigest: b }), new RegExp(`names ${b}`)],
      ["wrong image id", create(CommandSchema, { id: "bad-3", action: { case: "prepareShadow", value: { ...(localCommand("x", original.Id, a).action.value as PrepareShadow), imageId: b } } }), /is sha256:[0-9a-f]+, not sha256|names sha256/],
      ["absent image", localCommand("bad-4", original.Id, `sha256:${"0".repeat(64)}`), /no local image/],
      ["no signature", localCommand("bad-5", original.Id, a, { signature: () => "" }), /does not verify/],
    ];
    for (const [what, cmd, why] of cases) {
      const r = await journal.run(cmd);
      assert.equal(r.status, CommandStatus.REJECTED, `${what}: ${r.message}`);
      assert.match(r.message, why, what);
      assert.equal(r.shadowContainerId, "", what);
    }
    assert.equal((await shadowsOf(original.Id)).length, 0, "no shadow container was created");
    assert.ok((await docker.getImage(a).inspect()).Id === a, "a refused local image is not removed");

    const gone = await journal.run(localCommand("bad-6", "no-such-container-here", a));
    assert.equal(gone.status, CommandStatus.REJECTED);
    assert.match(gone.message, /^no container "no-such-container-here"/);
    const hostile = await journal.run(localCommand("bad-7", "../images/json?all=1", a));
    assert.match(hostile.message, /^no container/);
  });

  it("refuses every shadow without a public key, saying why", async () => {
    const original = await startOriginal(`sl-nokey-${suffix}`);
    const keyless = new AgentCommands({ docker, log, noKeyReason: "the agent runs without TLS and no --signing-key-pub" });
    const r = await keyless.prepareShadow(localCommand("k", original.Id, shadowIds[0] ?? "").action.value as PrepareShadow, "k");
    assert.equal(r.status, CommandStatus.REJECTED);
    assert.match(r.message, /without TLS and no --signing-key-pub/);
    const missing = new AgentCommands({ docker, log, signingKeyPub: join(tmp.path, "absent.pub") });
    const m = await missing.prepareShadow(localCommand("k", original.Id, shadowIds[0] ?? "").action.value as PrepareShadow, "k");
    assert.match(m.message, /cannot read the signing public key .*absent\.pub/);
    assert.equal((await shadowsOf(original.Id)).length, 0);
  });
});

describe("shadows follow their original (agent wiring)", () => {
  let agent: RunningAgent | undefined;
  const suffix = `${process.pid}-${Date.now().toString(36)}`;
  const start = () => startAgent({ node: "shadow-node", dataDir: join(tmp.path, "agent"), refreshMs: 500, execSource: "proc", inventory: false, signingKeyPub: keyFile, log });
  after(async () => {
    await agent?.stop();
  });

  it("removes the shadow within seconds of the original's removal, and at start for one removed while the agent was down", async () => {
    agent = await start();
    const live = await startOriginal(`sl-live-${suffix}`);
    const r = await agent.journal.run(localCommand("live-1", live.Id, shadowIds[0] ?? ""));
    assert.equal(r.status, CommandStatus.OK, r.message);
    await docker.getContainer(live.Id).remove({ force: true });
    await waitFor("the shadow's removal", async () => ((await shadowsOf(live.Id)).length === 0 ? true : undefined), 3000);

    const down = await startOriginal(`sl-down-${suffix}`);
    const d = await agent.journal.run(localCommand("down-1", down.Id, shadowIds[0] ?? ""));
    assert.equal(d.status, CommandStatus.OK, d.message);
    await agent.stop();
    agent = undefined;
    await docker.getContainer(down.Id).remove({ force: true });
    assert.equal((await shadowsOf(down.Id)).length, 1, "nobody watched");
    agent = await start();
    assert.equal((await shadowsOf(down.Id)).length, 0, "swept at start");
    const repeat = await agent.journal.run(localCommand("down-1", down.Id, shadowIds[0] ?? ""));
    assert.equal(repeat.shadowContainerId, d.shadowContainerId, "the journal answers across the restart");
  });
});

describe("shadow names and the registry path's checks", () => {
  it("makes a safe name from a hostile one", () => {
    const id = "ab".repeat(32);
    const docker = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
    for (const hostile of ["/we'ird\"\n$(rm -rf /)name", "/-..--", "/\u001b[31mred", `/${"x".repeat(500)}`]) {
      const n = shadowName(hostile, id);
      assert.match(n, docker, JSON.stringify(hostile));
      assert.ok(n.length <= 120, "bounded");
      assert.ok(n.endsWith("-shadow"));
    }
    assert.equal(shadowName("/we'ird\"\n$(rm -rf /)name", id), "weirdrm-rfname-shadow");
    assert.equal(shadowName("/-..--", id), "abababababab-shadow");
    assert.equal(shadowName("/web", id, true), "web-abababababab-shadow");
  });

  it("accepts only a registry reference by digest", () => {
    const d = `sha256:${"1".repeat(64)}`;
    assert.deepEqual(parseDigestReference(`127.0.0.1:5000/shadows/app@${d}`), { host: "127.0.0.1:5000", repository: "shadows/app", digest: d });
    assert.deepEqual(parseDigestReference(`registry.example/a-b/c_d@${d}`), { host: "registry.example", repository: "a-b/c_d", digest: d });
    for (const bad of [`app@${d}`, `library/app@${d}`, `127.0.0.1:5000/app:latest`, `127.0.0.1:5000/App@${d}`, `127.0.0.1:5000/app@sha256:12`, `127.0.0.1:5000/app@${d}\n`, `127.0.0.1:5000/$(id)@${d}`, `https://127.0.0.1:5000/app@${d}`]) {
      assert.throws(() => parseDigestReference(bad), /not a registry reference by digest/, JSON.stringify(bad));
    }
  });

  it("checks a stored signature's key, digest and repository", () => {
    const digest = `sha256:${"2".repeat(64)}`;
    const expected = { digest, dockerReference: "127.0.0.1:5000/shadows/app" };
    const payload = signingPayload(expected);
    const sig = signPayload(payload, keys.privateKeyPem);
    assert.deepEqual(verifyShadowSignature(payload, sig, keys.publicKeyPem, expected), expected);
    assert.throws(() => verifyShadowSignature(payload, flipByte(sig), keys.publicKeyPem, expected), /does not verify/);
    assert.throws(() => verifyShadowSignature(payload, sig, generateSigningKeys().publicKeyPem, expected), /does not verify/);
    assert.throws(() => verifyShadowSignature(payload, sig, keys.publicKeyPem, { ...expected, digest: `sha256:${"3".repeat(64)}` }), /names sha256:2+, not/);
    assert.throws(() => verifyShadowSignature(payload, sig, keys.publicKeyPem, { ...expected, dockerReference: "127.0.0.1:5000/other" }), /is for "127.0.0.1:5000\/shadows\/app"/);
  });

  it("refuses a registry shadow it cannot check, before pulling anything", async () => {
    const original = await startOriginal(`sl-reg-${process.pid}-${Date.now().toString(36)}`);
    const handler = new AgentCommands({ docker, log, signingKeyPub: keyFile });
    const digest = `sha256:${"4".repeat(64)}`;
    const ref = `127.0.0.1:1/shadows/app@${digest}`;
    const payload = signingPayload({ dockerReference: "127.0.0.1:1/shadows/app", digest });
    const base = { containerId: original.Id, shadowImage: ref, imageId: shadowIds[0] ?? "", manifestDigest: digest, localOnly: false, signaturePayload: payload, signature: signPayload(payload, keys.privateKeyPem), jobId: "j" };
    const act = (v: Partial<typeof base>) => handler.prepareShadow(create(PrepareShadowSchema, { ...base, ...v }), "r");
    const noReader = await act({});
    assert.equal(noReader.status, CommandStatus.REJECTED);
    assert.match(noReader.message, /cannot read signatures from a registry/);
    assert.match((await act({ manifestDigest: `sha256:${"5".repeat(64)}` })).message, /is not the one the shadow image names/);
    assert.match((await act({ signature: flipByte(base.signature) })).message, /does not verify/);
    assert.match((await act({ shadowImage: `app@${digest}` })).message, /not a registry reference by digest/);
    assert.equal((await shadowsOf(original.Id)).length, 0);
    assert.equal(await docker.getImage(ref).inspect().then(() => true, () => false), false, "nothing pulled");
  });
});
