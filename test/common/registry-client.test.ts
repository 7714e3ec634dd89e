/**
 * The registry client against a real docker-registry (TLS with a test CA, htpasswd auth): blobs and
 * manifests round-trip with their digests checked, bad credentials and outages are told apart
 * with clear errors, content changed in the registry's storage is caught, hostile names never
 * reach a URL, and the Bearer token flow works with the registry in token-auth mode (its details,
 * scope and service, against a small server that speaks it).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { createServer as createHttpsServer, type Server } from "node:https";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ShadowError } from "../../common/errors.js";
import { MANIFEST_MEDIA_TYPES, parseRegistryRef, readRegistryAuth, RegistryClient } from "../../common/registry-client.js";
import { startRegistry, type TestRegistry } from "../harness/registry.js";
import { rejectsWithCode } from "../harness/rejects-with-code.js";

const digestOf = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;


describe("registry client", () => {
  let reg: TestRegistry;
  let c: RegistryClient;
  const repo = `test/client-${process.pid}`;

  /** A blob's data file in the registry's filesystem storage. */
  const blobFile = (digest: string): string => {
    const hex = digest.slice("sha256:".length);
    return join(reg.storageDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
  };
  /** Config and layer blobs pushed, and an OCI manifest naming them (not yet put). */
  const smallImage = async (text: string, client: RegistryClient = c): Promise<Buffer> => {
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, note: text }));
    const layer = Buffer.from(`layer ${text}`);
    await client.pushBlob(repo, digestOf(config), config.length, () => config);
    await client.pushBlob(repo, digestOf(layer), layer.length, () => layer);
    return Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST_MEDIA_TYPES.ociManifest,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", size: config.length, digest: digestOf(config) },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", size: layer.length, digest: digestOf(layer) }],
      }),
    );
  };

  before(async () => {
    reg = await startRegistry();
    c = new RegistryClient({ host: reg.host, ca: reg.ca, auth: reg.auth, timeoutMs: 5000 });
  });
  after(async () => {
    c?.close();
    await reg?.close();
  });

  it("pings, uploads a blob once and reads it back with its digest checked", async () => {
    await c.ping();
    const blob = Buffer.from(`blob ${Date.now()} ${Math.random()}`);
    const d = digestOf(blob);
    assert.equal(await c.hasBlob(repo, d), false);
    let bodies = 0;
    await c.pushBlob(repo, d, blob.length, () => {
      bodies++;
      return blob;
    });
    assert.equal(bodies, 1);
    assert.equal(await c.hasBlob(repo, d), true);
    await c.pushBlob(repo, d, blob.length, () => {
      bodies++;
      return blob;
    });
    assert.equal(bodies, 1, "a blob the registry has is not sent again");
    assert.deepEqual(await c.getBlobBuffer(repo, d, 1024), blob);
    await rejectsWithCode(c.getBlobBuffer(repo, d, 4), Code.RegistryUnavailable, /larger than 4 bytes/);
    await rejectsWithCode(c.getBlobBuffer(repo, digestOf(Buffer.from("never pushed")), 1024), Code.NotFound, /has no blob/);
  });

  it("puts a manifest under a tag and its digest, gets it back, lists tags and deletes it", async () => {
    const manifest = await smallImage("tags");
    const digest = await c.putManifest(repo, digestOf(manifest), manifest, MANIFEST_MEDIA_TYPES.ociManifest);
    assert.equal(digest, digestOf(manifest));
    assert.equal(await c.putManifest(repo, "v1", manifest, MANIFEST_MEDIA_TYPES.ociManifest), digest);
    const byTag = await c.getManifest(repo, "v1");
    assert.deepEqual(byTag, { body: manifest, mediaType: MANIFEST_MEDIA_TYPES.ociManifest, digest });
    assert.deepEqual((await c.getManifest(repo, digest)).body, manifest);
    assert.ok((await c.listTags(repo)).includes("v1"));
    assert.deepEqual(await c.listTags("test/no-such-repo"), []);
    await rejectsWithCode(c.putManifest(repo, digestOf(Buffer.from("other")), manifest, MANIFEST_MEDIA_TYPES.ociManifest), Code.InvalidArgument, /has digest/);
    await c.deleteManifest(repo, digest);
    await rejectsWithCode(c.getManifest(repo, digest), Code.NotFound, /has no manifest/);
    await rejectsWithCode(c.getManifest(repo, "v1"), Code.NotFound);
    await rejectsWithCode(c.deleteManifest(repo, digest), Code.NotFound);
  });

  it("catches a blob and a manifest changed in the registry's storage", async () => {
    const blob = Buffer.from(`to be tampered ${Date.now()}`);
    const d = digestOf(blob);
    await c.pushBlob(repo, d, blob.length, () => blob);
    const tampered = Buffer.from(blob);
    tampered[0] = tampered[0] === 0x54 ? 0x55 : 0x54;
    await writeFile(blobFile(d), tampered);
    const stream = await c.getBlob(repo, d);
    const read = (async () => {
      for await (const _ of stream);
    })();
    await rejectsWithCode(read, Code.RegistryUnavailable, new RegExp(`has digest ${digestOf(tampered)}, not ${d} \\(corrupted or tampered`));

    const manifest = await smallImage("tampered manifest");
    const md = await c.putManifest(repo, "to-tamper", manifest, MANIFEST_MEDIA_TYPES.ociManifest);
    const stored = await readFile(blobFile(md), "utf8");
    await writeFile(blobFile(md), stored.replace('"schemaVersion":2', '"schemaVersion":2 '));
    await rejectsWithCode(c.getManifest(repo, md), Code.RegistryUnavailable, /corrupted or tampered/);
    await rejectsWithCode(c.getManifest(repo, "to-tamper"), Code.RegistryUnavailable, /corrupted or tampered/);
  });

  it("says the credentials were refused, naming the registry and the user", async () => {
    const wrong = new RegistryClient({ host: reg.host, ca: reg.ca, auth: { username: reg.auth.username, password: "not-the-password" } });
    try {
      await rejectsWithCode(wrong.ping(), Code.Unauthenticated, new RegExp(`^registry ${reg.host} refused the credentials of user ${reg.auth.username} \\(HTTP 401`));
      await rejectsWithCode(wrong.hasBlob(repo, digestOf(Buffer.from("x"))), Code.Unauthenticated);
    } finally {
      wrong.close();
    }
    const anonymous = new RegistryClient({ host: reg.host, ca: reg.ca });
    await rejectsWithCode(anonymous.ping(), Code.Unauthenticated, /requires credentials/);
    anonymous.close();
  });

  it("never trusts a certificate its CA did not sign", async () => {
    const systemRoots = new RegistryClient({ host: reg.host, auth: reg.auth });
    await rejectsWithCode(systemRoots.ping(), Code.RegistryUnavailable, new RegExp(`^registry ${reg.host} presented a TLS certificate that is not trusted: UNABLE_TO_VERIFY_LEAF_SIGNATURE`));
    systemRoots.close();
  });

  it("reads credentials from a username:password file", async () => {
    assert.deepEqual(await readRegistryAuth(reg.authFile), reg.auth);
    const bad = join(reg.dir, "bad-auth");
    await writeFile(bad, "no colon here\n");
    const err = await rejectsWithCode(readRegistryAuth(bad), Code.InvalidArgument, /expected "username:password"/);
    assert.doesNotMatch(err.message, /no colon/, "the file's content is not echoed");
    await rejectsWithCode(readRegistryAuth(join(reg.dir, "missing")), Code.InvalidArgument, /ENOENT/);
  });

  it("a stopped registry is RegistryUnavailable naming the host and errno; started again it works", async () => {
    // Cut while a blob is being read: the stream errors, it does not just end short.
    const big = Buffer.alloc(32 << 20, 7);
    await c.pushBlob(repo, digestOf(big), big.length, () => big);
    const reading = (await c.getBlob(repo, digestOf(big))) as import("node:stream").Readable;
    const first = await new Promise<Buffer>((resolve) => reading.once("data", resolve));
    reading.pause();
    assert.ok(first.length < big.length);
    await reg.stop();
    reading.resume();
    await rejectsWithCode(
      (async () => {
        for await (const _ of reading);
      })(),
      Code.RegistryUnavailable,
      new RegExp(`blob ${repo}@${digestOf(big)} from registry ${reg.host} (broke off|has digest)`),
    );
    try {
      await rejectsWithCode(c.ping(), Code.RegistryUnavailable, new RegExp(`^registry ${reg.host} does not answer: ECONNREFUSED`));
      await rejectsWithCode(c.getManifest(repo, "v1"), Code.RegistryUnavailable, /ECONNREFUSED/);
    } finally {
      await reg.start();
    }
    await c.ping();
    const blob = Buffer.from(`after restart ${Date.now()}`);
    await c.pushBlob(repo, digestOf(blob), blob.length, () => blob);
    assert.deepEqual(await c.getBlobBuffer(repo, digestOf(blob), 1024), blob);
  });

  it("refuses hostile repository names, tags and digests before any request", async () => {
    const tcp = createTcpServer((s) => s.destroy());
    let connections = 0;
    tcp.on("connection", () => connections++);
    await new Promise<void>((r) => tcp.listen(0, "127.0.0.1", r));
    const trap = new RegistryClient({ host: `127.0.0.1:${(tcp.address() as AddressInfo).port}`, ca: reg.ca, auth: reg.auth });
    try {
      const good = digestOf(Buffer.from("x"));
      for (const name of ["../x", "a b", "$(id)", "A/b", "a//b", "x/../../v2", "a\nb", "", "a".repeat(256)]) {
        await rejectsWithCode(trap.hasBlob(name, good), Code.InvalidArgument, /invalid repository name/);
        await rejectsWithCode(trap.getManifest(name, "latest"), Code.InvalidArgument);
        await rejectsWithCode(trap.listTags(name), Code.InvalidArgument);
      }
      for (const ref of ["../../x", "a b", "$(id)", "latest\n", ".hidden", "sha256:abc", "md5:" + "0".repeat(32), "x".repeat(129)]) {
        await rejectsWithCode(trap.getManifest("ok/repo", ref), Code.InvalidArgument, /invalid tag or digest/);
        await rejectsWithCode(trap.putManifest("ok/repo", ref, Buffer.from("{}"), MANIFEST_MEDIA_TYPES.ociManifest), Code.InvalidArgument);
      }
      for (const d of ["sha256:" + "A".repeat(64), "sha256:../x", "latest"]) {
        await rejectsWithCode(trap.getBlob("ok/repo", d), Code.InvalidArgument, /invalid digest/);
        await rejectsWithCode(trap.deleteManifest("ok/repo", d), Code.InvalidArgument);
      }
      assert.equal(connections, 0);
      assert.throws(() => new RegistryClient({ host: "evil.example/../x" }), /invalid registry host/);
    } finally {
      trap.close();
      tcp.close();
    }
  });

  it("parses --registry host:port/repository and refuses the rest", () => {
    assert.deepEqual(parseRegistryRef("127.0.0.1:5000/shadows"), { host: "127.0.0.1:5000", repository: "shadows" });
    assert.deepEqual(parseRegistryRef("registry.example/team/shadow-images"), { host: "registry.example", repository: "team/shadow-images" });
    assert.deepEqual(parseRegistryRef("localhost/x"), { host: "localhost", repository: "x" });
    assert.deepEqual(parseRegistryRef("[::1]:5000/x"), { host: "[::1]:5000", repository: "x" });
    for (const bad of ["https://registry.example/x", "shadows", "team/shadows", "registry.example/", "registry.example/Upper", "registry.example/x:tag", "registry.example/x@sha256:" + "0".repeat(64), "reg istry.example/x", "registry.example:99999/x", "registry.example/$(id)"]) {
      assert.throws(() => parseRegistryRef(bad), (e: unknown) => e instanceof ShadowError && e.code === Code.InvalidArgument, bad);
    }
  });

  describe("a registry with token auth", () => {
    let tokReg: TestRegistry;
    before(async () => {
      tokReg = await startRegistry({ tokenAuth: true });
    });
    after(async () => {
      await tokReg?.close();
    });

    it("pushes, reads and deletes with tokens the registry verifies", async () => {
      const t = new RegistryClient({ host: tokReg.host, ca: tokReg.ca, auth: tokReg.auth });
      try {
        await t.ping();
        const manifest = await smallImage("token auth", t);
        const digest = await t.putManifest(repo, "tok", manifest, MANIFEST_MEDIA_TYPES.ociManifest);
        assert.deepEqual((await t.getManifest(repo, "tok")).body, manifest);
        assert.deepEqual(await t.listTags(repo), ["tok"]);
        await t.deleteManifest(repo, digest);
        await rejectsWithCode(t.getManifest(repo, digest), Code.NotFound);
        const asked = tokReg.token?.requests() ?? 0;
        assert.ok(asked >= 3 && asked <= 6, `a token per scope, reused: ${asked} requests`);
      } finally {
        t.close();
      }
    });

    it("a token service refusing the credentials is Unauthenticated, naming it and the user", async () => {
      const t = new RegistryClient({ host: tokReg.host, ca: tokReg.ca, auth: { username: tokReg.auth.username, password: "wrong" } });
      const realm = new URL(tokReg.token?.realm ?? "https://missing").origin;
      await rejectsWithCode(t.listTags(repo), Code.Unauthenticated, new RegExp(`^the token service ${realm} of registry ${tokReg.host} refused the credentials of user ${tokReg.auth.username} \\(HTTP 401`));
      t.close();
    });
  });

  describe("Bearer token challenge details", () => {
    let server: Server;
    let port = 0;
    const token = `tok-${process.pid}`;
    const tokenRequests: Array<{ authorization: string | undefined; scope: string | null; service: string | null }> = [];
    let realm = "";

    before(async () => {
      const [cert, key] = await Promise.all([readFile(join(reg.dir, "server.crt")), readFile(join(reg.dir, "server.key"))]);
      // A registry with token auth as distribution's spec has it: challenge, token realm, Bearer.
      server = createHttpsServer({ cert, key }, (req, res) => {
        const url = new URL(req.url ?? "/", "https://127.0.0.1");
        if (url.pathname === "/token") {
          tokenRequests.push({ authorization: req.headers.authorization, scope: url.searchParams.get("scope"), service: url.searchParams.get("service") });
          const ok = req.headers.authorization === `Basic ${Buffer.from(`${reg.auth.username}:${reg.auth.password}`).toString("base64")}`;
          res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
          res.end(ok ? JSON.stringify({ token, expires_in: 300 }) : JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "bad password" }] }));
          return;
        }
        if (req.headers.authorization !== `Bearer ${token}`) {
          const scope = url.pathname === "/v2/" ? "" : `,scope="repository:team/app:pull"`;
          res.writeHead(401, { "www-authenticate": `Bearer realm="${realm}",service="fake-registry"${scope}`, "content-type": "application/json" });
          res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
          return;
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(url.pathname === "/v2/team/app/tags/list" ? JSON.stringify({ name: "team/app", tags: ["a", "b", "bad tag"] }) : "{}");
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      port = (server.address() as AddressInfo).port;
      realm = `https://127.0.0.1:${port}/token`;
    });
    after(() => {
      server?.close();
    });

    it("gets a token from the realm with the credentials and uses it", async () => {
      const b = new RegistryClient({ host: `127.0.0.1:${port}`, ca: reg.ca, auth: reg.auth });
      try {
        await b.ping();
        assert.deepEqual(await b.listTags("team/app"), ["a", "b"]);
        assert.deepEqual(await b.listTags("team/app"), ["a", "b"]);
        assert.equal(tokenRequests.length, 2, "one token for /v2/, one for the repository, then reused");
        assert.equal(tokenRequests[1]?.scope, "repository:team/app:pull");
        assert.equal(tokenRequests[1]?.service, "fake-registry");
      } finally {
        b.close();
      }
    });


    it("sends no credentials to a realm that is not https", async () => {
      realm = "http://token.example/token";
      const before_ = tokenRequests.length;
      const b = new RegistryClient({ host: `127.0.0.1:${port}`, ca: reg.ca, auth: reg.auth });
      try {
        await rejectsWithCode(b.listTags("team/app"), Code.RegistryUnavailable, /token realm that is not https/);
      } finally {
        b.close();
        realm = `https://127.0.0.1:${port}/token`;
      }
      assert.equal(tokenRequests.length, before_);
    });
  });
});
