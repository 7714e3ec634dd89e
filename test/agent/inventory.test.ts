/**
 * Package inventory: the parsers on files captured from a real Debian 12 host (see
 * test/fixtures/inventory/README.md), the layering rule on fake layer directories in a temp dir
 * (whiteouts as real 0/0 character devices, opaque directories as the real xattr when setfattr is
 * installed, and as the `.wh..wh..opq` marker), and a real image built on the local engine whose
 * layers are read where overlay2 keeps them.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path, { dirname } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseApkInstalled } from "../../agent/inventory/apk.js";
import { deb822Stanzas, parseDpkgStatus, parseDpkgStatusD, parseSourceField } from "../../agent/inventory/dpkg.js";
import { inventoryOf, type ImageInventory, type InventoryLayer, type InventoryOptions } from "../../agent/inventory/layer-inventory.js";
import { isNodeModulesManifest, parsePackageJson } from "../../agent/inventory/npm.js";
import { parseOsRelease } from "../../agent/inventory/os-release.js";
import type { Package } from "../../agent/inventory/package-record.js";
import { normalizePypiName, parsePythonMetadata } from "../../agent/inventory/pypi.js";
import { ImageLayerResolver } from "../../agent/layers/image-layers.js";
import { libcOpaqueXattrReader, readOpaqueXattr } from "../../agent/overlay/opaque-xattr.js";
import { Code, ShadowError } from "../../common/errors.js";
import { ensureInventoryImage } from "../harness/inventory-images.js";
import { execFileP, testEngine, type TestEngine } from "../harness/engine.js";

// Compiled to dist/test/agent/inventory.test.js; SHADOWLAYER_REPO_ROOT overrides the guess.
const root = process.env["SHADOWLAYER_REPO_ROOT"] ?? path.resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const fixturePath = (rel: string): string => path.join(root, "test/fixtures/inventory", rel);
const fixture = (rel: string): string => readFileSync(fixturePath(rel), "utf8");

// setfattr comes with Debian's attr package, which test/harness/docker-host.sh installs.
execFileSync("setfattr", ["--version"], { stdio: "ignore" });

const names = (inv: ImageInventory, type?: Package["type"]): string[] =>
  inv.packages.filter((p) => type === undefined || p.type === type).map((p) => `${p.name} ${p.version} @${p.layerIndex}`);
const find = (inv: ImageInventory, type: Package["type"], name: string): Package | undefined => inv.packages.find((p) => p.type === type && p.name === name);

describe("inventory parsers", () => {
  it("reads installed packages from a dpkg status file, with both Source: forms", () => {
    const r = parseDpkgStatus(fixture("dpkg/status"));
    assert.deepEqual(r.problems, []);
    assert.equal(r.unreadable, 0);
    const by = new Map(r.entries.map((e) => [e.pkg.name, e.pkg]));
    assert.deepEqual([...by.keys()].sort(), ["base-files", "bash", "libblkid1", "libc-bin", "libc6", "libssl3", "openssl", "tzdata", "zlib1g"]);
    // `deinstall ok config-files` and `purge ok not-installed` are not installed.
    assert.equal(by.has("libssl1.1"), false);
    assert.equal(by.has("python3-minimal"), false);
    assert.deepEqual(by.get("libc6"), { type: "deb", name: "libc6", version: "2.36-9+deb12u14", sourceName: "glibc", sourceVersion: "2.36-9+deb12u14" });
    assert.deepEqual(by.get("libc-bin"), { type: "deb", name: "libc-bin", version: "2.36-9+deb12u4", sourceName: "glibc", sourceVersion: "2.36-9+deb12u4" });
    // A binNMU: the source version in parentheses differs from the binary's.
    assert.deepEqual(by.get("bash"), { type: "deb", name: "bash", version: "5.2.15-2+b8", sourceName: "bash", sourceVersion: "5.2.15-2" });
    assert.equal(by.get("zlib1g")?.version, "1:1.2.13.dfsg-1");
    assert.equal(by.get("zlib1g")?.sourceName, "zlib");
    // No Source: the source package has the binary's name and version.
    assert.deepEqual(by.get("tzdata"), { type: "deb", name: "tzdata", version: "2025b-0+deb12u2", sourceName: "tzdata", sourceVersion: "2025b-0+deb12u2" });
    assert.equal(r.entries.find((e) => e.pkg.name === "libc6")?.key, "libc6:amd64");
  });

  it("joins deb822 continuation lines and splits Source: fields", () => {
    const libcBin = deb822Stanzas(fixture("dpkg/status")).find((s) => s.fields.get("package") === "libc-bin");
    assert.ok(libcBin);
    assert.equal(libcBin.fields.get("conffiles")?.split("\n").filter((l) => l.trim() !== "").length, 4);
    assert.match(libcBin.fields.get("description") ?? "", /^GNU C Library: Binaries\nThis package contains/);
    assert.deepEqual(parseSourceField("glibc (2.36-9+deb12u4)"), ["glibc", "2.36-9+deb12u4"]);
    assert.deepEqual(parseSourceField("glibc"), ["glibc", undefined]);
    assert.equal(parseSourceField("a b c"), undefined);
  });

  it("reads distroless status.d files (Status optional) and skips their md5sums", () => {
    const files = readdirSync(fixturePath("dpkg/status.d")).filter((f) => !f.endsWith(".md5sums")).sort();
    assert.deepEqual(files, ["base-files", "libc6", "libssl3"]);
    const pkgs = files.flatMap((f) => {
      const r = parseDpkgStatusD(fixture(`dpkg/status.d/${f}`));
      assert.deepEqual(r.problems, [], f);
      return r.entries.map((e) => `${e.pkg.name} ${e.pkg.version} ${e.pkg.sourceName ?? ""}`);
    });
    assert.deepEqual(pkgs, ["base-files 12.4+deb12u11 base-files", "libc6 2.36-9+deb12u14 glibc", "libssl3 3.0.19-1~deb12u2 openssl"]);
    assert.deepEqual(parseDpkgStatusD("Package: x\nStatus: deinstall ok config-files\nVersion: 1\n").entries, []);
    // The status file itself requires Status.
    assert.equal(parseDpkgStatus("Package: x\nVersion: 1\n").unreadable, 1);
  });

  it("keeps the readable stanzas of a corrupt status file and says what it dropped", () => {
    const r = parseDpkgStatus(fixture("dpkg/status-corrupt"));
    assert.deepEqual(r.entries.map((e) => e.pkg.name), ["base-files", "bash", "libc6", "zlib1g"]);
    // libssl3 holds binary data, openssl is cut off mid-field, and the file has no final newline.
    assert.equal(r.unreadable, 3);
    assert.match(r.problems.join("\n"), /NUL/);
    assert.match(r.problems.join("\n"), /neither a field nor a continuation line: "Prior"/);
    assert.match(r.problems.join("\n"), /truncated/);
    assert.equal(parseDpkgStatus("Package: x\nStatus: install ok inst\n").unreadable, 1, "a Status cut short is not a status");
    assert.equal(parseDpkgStatus("Package: x\nStatus: install ok installed\n").unreadable, 1, "an installed stanza without Version");
  });

  it("reads the apk installed database, origin as source", () => {
    const r = parseApkInstalled(fixture("apk/installed"));
    assert.deepEqual(r.problems, []);
    assert.deepEqual(
      r.entries.map((e) => e.pkg),
      [
        { type: "apk", name: "musl", version: "1.2.4_git20230717-r4", sourceName: "musl" },
        { type: "apk", name: "busybox", version: "1.36.1-r15", sourceName: "busybox" },
        { type: "apk", name: "libcrypto3", version: "3.1.4-r5", sourceName: "openssl" },
        { type: "apk", name: "ssl_client", version: "1.36.1-r15", sourceName: "busybox" },
      ],
    );
    const bad = parseApkInstalled("P:musl\nV:1.2.4-r2\n\nP:zlib\nA:x86_64\n\nP:bad\nthis is not a line\n\n");
    assert.deepEqual(bad.entries.map((e) => e.pkg.name), ["musl"]);
    assert.equal(bad.unreadable, 2);
  });

  it("reads npm manifests (scoped names), ignores stubs, reports broken JSON", () => {
    assert.deepEqual(parsePackageJson(fixture("npm/grpc-js.package.json")).pkg, { type: "npm", name: "@grpc/grpc-js", version: "1.14.7" });
    assert.deepEqual(parsePackageJson(fixture("npm/tar-stream.package.json")).pkg, { type: "npm", name: "tar-stream", version: "3.2.2" });
    assert.deepEqual(parsePackageJson(fixture("npm/stub.package.json")), {});
    assert.match(parsePackageJson(fixture("npm/truncated.package.json")).problem ?? "", /^not JSON/);
    assert.match(parsePackageJson("[1]").problem ?? "", /not a JSON object/);
    assert.equal(isNodeModulesManifest("usr/lib/node_modules/npm/package.json"), true);
    assert.equal(isNodeModulesManifest("app/node_modules/@grpc/grpc-js/package.json"), true);
    assert.equal(isNodeModulesManifest("app/node_modules/a/node_modules/b/package.json"), true);
    assert.equal(isNodeModulesManifest("app/node_modules/.pnpm/a@1.0.0/node_modules/a/package.json"), true);
    assert.equal(isNodeModulesManifest("app/package.json"), false, "the application's own manifest");
    assert.equal(isNodeModulesManifest("app/node_modules/a/dist/package.json"), false, "a manifest inside a package");
    assert.equal(isNodeModulesManifest("app/node_modules/@scope/package.json"), false);
    assert.equal(isNodeModulesManifest("app/node_modules/.bin/package.json"), false);
  });

  it("reads METADATA and PKG-INFO and normalises names per PEP 503", () => {
    const pkg = (rel: string): string => {
      const r = parsePythonMetadata(fixture(rel));
      assert.equal(r.problem, undefined, rel);
      return `${r.pkg?.name ?? ""} ${r.pkg?.version ?? ""}`;
    };
    assert.equal(pkg("pypi/PyYAML-6.0.dist-info.METADATA"), "pyyaml 6.0");
    assert.equal(pkg("pypi/PyJWT-2.6.0.egg-info.PKG-INFO"), "pyjwt 2.6.0");
    assert.equal(pkg("pypi/lazr.uri-1.0.6.egg-info.PKG-INFO"), "lazr-uri 1.0.6");
    assert.equal(pkg("pypi/crit-3.17.1-py3.11.egg-info"), "crit 3.17.1");
    assert.equal(pkg("pypi/cryptography.egg-info.PKG-INFO"), "cryptography 38.0.4");
    // Headers end at the first blank line: the body's "Name:" is not read.
    assert.equal(pkg("pypi/Foo_Bar.baz-1.0.dist-info.METADATA"), "foo-bar-baz 1.0.post1");
    assert.equal(normalizePypiName("Foo__Bar..-baz"), "foo-bar-baz");
    assert.equal(normalizePypiName("zope.interface"), "zope-interface");
    assert.match(parsePythonMetadata("Metadata-Version: 2.1\nName: x\n").problem ?? "", /Version/);
    assert.match(parsePythonMetadata("\0\0\0").problem ?? "", /NUL/);
  });

  it("reads os-release with quotes", () => {
    assert.deepEqual(parseOsRelease(fixture("os-release/debian-12")), { id: "debian", versionId: "12", versionCodename: "bookworm", prettyName: "Debian GNU/Linux 12 (bookworm)" });
    assert.deepEqual(parseOsRelease(fixture("os-release/alpine-3.19")), { id: "alpine", versionId: "3.19.1", prettyName: "Alpine Linux v3.19" });
    assert.deepEqual(parseOsRelease(fixture("os-release/ubuntu-22.04")), { id: "ubuntu", versionId: "22.04", versionCodename: "jammy", prettyName: "Ubuntu 22.04.4 LTS" });
    assert.deepEqual(parseOsRelease("# x\nID='arch'\nPRETTY_NAME=\"Arch \\\"Linux\\\" \\$HOME\"\n"), { id: "arch", versionId: "", prettyName: 'Arch "Linux" $HOME' });
    assert.equal(parseOsRelease("NAME=x\n"), undefined);
  });
});

/** Layer directories in a temp dir, written the way overlay2 keeps them. */
class FakeImage {
  readonly layers: InventoryLayer[] = [];

  constructor(
    readonly root: string,
    count: number,
  ) {
    for (let i = 0; i < count; i++) {
      const dir = path.join(root, `L${i}`);
      mkdirSync(dir, { recursive: true });
      this.layers.push({ diffId: `sha256:${createHash("sha256").update(`${root}/${i}`).digest("hex")}`, dir });
    }
  }

  private abs(L: number, rel: string): string {
    return path.join(this.layers[L]?.dir ?? "", rel);
  }

  write(L: number, rel: string, data: string | Buffer): this {
    mkdirSync(dirname(this.abs(L, rel)), { recursive: true });
    writeFileSync(this.abs(L, rel), data);
    return this;
  }

  /** overlayfs whiteout: a 0/0 character device (needs root, as the agent has). */
  whiteout(L: number, rel: string): this {
    mkdirSync(dirname(this.abs(L, rel)), { recursive: true });
    execFileSync("mknod", [this.abs(L, rel), "c", "0", "0"]);
    return this;
  }

  opaque(L: number, rel: string, how: "xattr" | "marker"): this {
    mkdirSync(this.abs(L, rel), { recursive: true });
    if (how === "xattr") execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", this.abs(L, rel)]);
    else writeFileSync(path.join(this.abs(L, rel), ".wh..wh..opq"), "");
    return this;
  }

  symlink(L: number, rel: string, target: string): this {
    mkdirSync(dirname(this.abs(L, rel)), { recursive: true });
    symlinkSync(target, this.abs(L, rel));
    return this;
  }

  id(L: number): string {
    return this.layers[L]?.diffId ?? "";
  }

  inventory(options?: InventoryOptions): Promise<ImageInventory> {
    return inventoryOf(this.layers, options);
  }
}

function status(pkgs: Record<string, string>): string {
  return Object.entries(pkgs)
    .map(([name, version]) => `Package: ${name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: ${version}\nDescription: ${name}\n test package\n`)
    .join("\n");
}

const manifest = (name: string, version: string): string => `${JSON.stringify({ name, version, license: "MIT" }, null, 2)}\n`;
const metadata = (name: string, version: string): string => `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\n\nbody\n`;
const NM = "usr/lib/node_modules";
const SP = "usr/local/lib/python3.11/site-packages";

describe("inventory layering on layer directories", () => {
  let tmp: string;
  let n = 0;
  const image = (count: number): FakeImage => new FakeImage(path.join(tmp, `img${n++}`), count);

  before(() => {
    tmp = mkdtempSync(path.join(tmpdir(), "shadowlayer-inventory-"));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it("attributes an upgrade to the upgrading layer, drops a removed package, keeps an untouched one where it arrived", async () => {
    const img = image(5)
      .write(0, "etc/os-release", fixture("os-release/debian-12"))
      .write(1, "var/lib/dpkg/status", status({ libfoo: "1.0", libbar: "2.0", libbaz: "1.0" }))
      .write(2, "var/lib/dpkg/status", status({ libfoo: "1.0", libbaz: "1.0" }))
      .write(3, "var/lib/dpkg/status", status({ libfoo: "1.1", libbaz: "1.0" }))
      .write(4, "usr/bin/tool", "#!/bin/sh\n");
    const inv = await img.inventory();
    assert.deepEqual(names(inv, "deb"), ["libbaz 1.0 @1", "libfoo 1.1 @3"]);
    const foo = find(inv, "deb", "libfoo");
    assert.deepEqual(foo, { type: "deb", name: "libfoo", version: "1.1", sourceName: "libfoo", sourceVersion: "1.1", path: "/var/lib/dpkg/status", layerIndex: 3, layerId: img.id(3) });
    assert.equal(find(inv, "deb", "libbaz")?.layerId, img.id(1));
    assert.equal(inv.os?.id, "debian");
    assert.deepEqual(inv.partial, []);
  });

  it("attributes a package removed and added again to the layer that added it again", async () => {
    const img = image(4)
      .write(0, "var/lib/dpkg/status", status({ x: "1.0" }))
      .write(1, "var/lib/dpkg/status", status({ y: "2.0" }))
      .write(3, "var/lib/dpkg/status", status({ x: "1.0", y: "2.0" }))
      .write(0, `${NM}/d/package.json`, manifest("d", "1.0.0"))
      .whiteout(1, `${NM}/d/package.json`)
      .write(3, `${NM}/d/package.json`, manifest("d", "1.0.0"));
    const inv = await img.inventory();
    assert.deepEqual(names(inv), ["x 1.0 @3", "y 2.0 @1", "d 1.0.0 @3"]);
    assert.equal(find(inv, "npm", "d")?.path, `/${NM}/d/package.json`);
  });

  it("hides files whited out as a file, as a directory, and AUFS-style", async () => {
    const img = image(3)
      .write(1, `${NM}/a/package.json`, manifest("a", "1.0.0"))
      .write(1, `${NM}/c/package.json`, manifest("c", "1.0.0"))
      .write(1, `${NM}/f/package.json`, manifest("f", "1.0.0"))
      .write(1, `${NM}/@s/g/package.json`, manifest("@s/g", "2.0.0"))
      .write(1, `${SP}/requests-2.25.0.dist-info/METADATA`, metadata("requests", "2.25.0"))
      .whiteout(2, `${NM}/a/package.json`)
      .whiteout(2, `${NM}/c`)
      .write(2, `${NM}/f/.wh.package.json`, "")
      // pip upgrade: the old dist-info dir goes, a new one comes.
      .whiteout(2, `${SP}/requests-2.25.0.dist-info`)
      .write(2, `${SP}/requests-2.31.0.dist-info/METADATA`, metadata("requests", "2.31.0"));
    assert.ok(lstatSync(path.join(img.layers[2]?.dir ?? "", NM, "c")).isCharacterDevice());
    const inv = await img.inventory();
    assert.deepEqual(names(inv), ["@s/g 2.0.0 @1", "requests 2.31.0 @2"]);
    assert.deepEqual(inv.partial, []);
  });

  for (const how of ["marker", "xattr"] as const) {
    it(`treats an opaque directory (${how}) as hiding everything below it`, async () => {
      const img = image(3)
        .write(1, `${SP}/six-1.16.0.dist-info/METADATA`, metadata("six", "1.16.0"))
        .write(1, `${SP}/idna-2.10.dist-info/METADATA`, metadata("idna", "2.10"))
        .write(1, `${NM}/a/package.json`, manifest("a", "1.0.0"))
        .opaque(2, SP, how)
        .write(2, `${SP}/idna-3.4.dist-info/METADATA`, metadata("idna", "3.4"))
        // Opaque higher up: usr/lib is opaque, so node_modules/a below it is gone too.
        .opaque(2, "usr/lib", how)
        .write(2, `${NM}/b/package.json`, manifest("b", "1.0.0"));
      const inv = await img.inventory();
      assert.deepEqual(names(inv), ["b 1.0.0 @2", "idna 3.4 @2"]);
      assert.deepEqual(inv.partial, []);
    });
  }

  it("reports xattrs it cannot read and then assumes directories are not opaque", async () => {
    const img = image(2)
      .write(0, `${SP}/six-1.16.0.dist-info/METADATA`, metadata("six", "1.16.0"))
      .write(1, `${SP}/idna-3.4.dist-info/METADATA`, metadata("idna", "3.4"));
    // What a host without glibc sees: the C library does not load.
    const inv = await img.inventory({ readOpaqueXattr: libcOpaqueXattrReader("libc.no-such-variant.so.1") });
    assert.deepEqual(names(inv), ["idna 3.4 @1", "six 1.16.0 @0"]);
    assert.equal(inv.partial.length, 1);
    assert.equal(inv.partial[0]?.layerId, img.id(1));
    assert.equal(inv.partial[0]?.path, "/usr");
    assert.match(inv.partial[0]?.reason ?? "", /^cannot read overlay xattrs: libc\.no-such-variant\.so\.1 cannot be loaded .*; directories assumed not opaque$/);
  });

  it("reads status.d files one per package", async () => {
    const img = image(4)
      .write(0, "var/lib/dpkg/status.d/libc6", "Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\nSource: glibc\n")
      .write(0, "var/lib/dpkg/status.d/libc6.md5sums", "0123  lib/x86_64-linux-gnu/libc.so.6\n")
      .write(1, "var/lib/dpkg/status.d/tzdata", "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n")
      .write(1, "var/lib/dpkg/status.d/base-files", "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n")
      .write(2, "var/lib/dpkg/status.d/libc6", "Package: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nSource: glibc\n")
      .whiteout(3, "var/lib/dpkg/status.d/tzdata");
    const inv = await img.inventory();
    assert.deepEqual(names(inv), ["base-files 12.4+deb12u5 @1", "libc6 2.36-9+deb12u4 @2"]);
    assert.equal(find(inv, "deb", "libc6")?.path, "/var/lib/dpkg/status.d/libc6");
    assert.equal(find(inv, "deb", "libc6")?.sourceName, "glibc");
  });

  it("finds npm and PyPI packages under the application roots, nested and pnpm-style, but not the app's own manifest", async () => {
    const img = image(1)
      .write(0, "app/package.json", manifest("my-app", "0.0.1"))
      .write(0, "app/node_modules/express/package.json", manifest("express", "4.18.2"))
      .write(0, "app/node_modules/express/lib/package.json", '{"type":"commonjs"}')
      .write(0, "app/node_modules/express/node_modules/debug/package.json", manifest("debug", "2.6.9"))
      .write(0, "app/node_modules/@types/node/package.json", manifest("@types/node", "20.11.0"))
      .write(0, "app/node_modules/.pnpm/ms@2.1.3/node_modules/ms/package.json", manifest("ms", "2.1.3"))
      .write(0, "home/node/svc/node_modules/left-pad/package.json", manifest("left-pad", "1.3.0"))
      .write(0, "opt/venv/lib/python3.11/site-packages/Flask-2.3.2.dist-info/METADATA", metadata("Flask", "2.3.2"))
      .write(0, "srv/.venv/lib/python3.12/site-packages/zope.interface-6.0.dist-info/METADATA", metadata("zope.interface", "6.0"))
      .write(0, "usr/lib/python3/dist-packages/six-1.16.0.egg-info", metadata("six", "1.16.0"))
      .write(0, "usr/lib/python3/dist-packages/PyJWT-2.6.0.egg-info/PKG-INFO", fixture("pypi/PyJWT-2.6.0.egg-info.PKG-INFO"))
      .write(0, "usr/local/lib/node_modules/npm/package.json", manifest("npm", "10.2.4"))
      // Not read: outside every root, and inside a package without a nested node_modules.
      .write(0, "var/cache/node_modules/x/package.json", manifest("x", "1.0.0"))
      .write(0, "app/node_modules/a/b/c/d/e/f/g/node_modules/deep/package.json", manifest("deep", "1.0.0"))
      .symlink(0, "app/node_modules/linked", "/usr/lib/node_modules/npm");
    const inv = await img.inventory();
    assert.deepEqual(names(inv, "npm").sort(), ["@types/node 20.11.0 @0", "debug 2.6.9 @0", "express 4.18.2 @0", "left-pad 1.3.0 @0", "ms 2.1.3 @0", "npm 10.2.4 @0"]);
    assert.deepEqual(names(inv, "pypi").sort(), ["flask 2.3.2 @0", "pyjwt 2.6.0 @0", "six 1.16.0 @0", "zope-interface 6.0 @0"]);
    assert.equal(find(inv, "npm", "ms")?.path, "/app/node_modules/.pnpm/ms@2.1.3/node_modules/ms/package.json");
    assert.equal(find(inv, "pypi", "six")?.path, "/usr/lib/python3/dist-packages/six-1.16.0.egg-info");
  });

  it("reads os-release through a symlink into a lower layer, and never follows a symlinked parent out of the layer", async () => {
    const outside = path.join(tmp, "outside");
    mkdirSync(path.join(outside, "apk/db"), { recursive: true });
    writeFileSync(path.join(outside, "apk/db/installed"), "P:evil\nV:1.0-r0\n\n");
    const img = image(2)
      .write(0, "usr/lib/os-release", fixture("os-release/alpine-3.19"))
      .symlink(1, "etc/os-release", "../usr/lib/os-release")
      .symlink(1, "lib", outside);
    const inv = await img.inventory();
    assert.deepEqual(inv.os, { id: "alpine", versionId: "3.19.1", prettyName: "Alpine Linux v3.19" });
    assert.deepEqual(inv.packages, []);
  });

  it("reads apk's database", async () => {
    const img = image(2)
      .write(0, "lib/apk/db/installed", "P:musl\nV:1.2.4-r2\no:musl\n\nP:zlib\nV:1.3-r0\no:zlib\n\n")
      .write(1, "lib/apk/db/installed", "P:musl\nV:1.2.4-r2\no:musl\n\nP:zlib\nV:1.3.1-r0\no:zlib\n\n");
    const inv = await img.inventory();
    assert.deepEqual(names(inv), ["musl 1.2.4-r2 @0", "zlib 1.3.1-r0 @1"]);
    assert.equal(find(inv, "apk", "zlib")?.sourceName, "zlib");
  });

  it("lists what a corrupt top status still shows, reports it, and keeps other databases", async () => {
    const img = image(3)
      .write(0, "var/lib/dpkg/status", fixture("dpkg/status"))
      .write(1, "var/lib/dpkg/status", readFileSync(fixturePath("dpkg/status-corrupt")))
      .write(0, `${NM}/lodash/package.json`, manifest("lodash", "4.17.21"))
      .write(2, `${NM}/broken/package.json`, '{"name": "broken", "vers');
    const inv = await img.inventory();
    // Readable in the corrupt top file: same versions as below, so attributed to layer 0.
    assert.deepEqual(names(inv, "deb"), ["base-files 12.4+deb12u11 @0", "bash 5.2.15-2+b8 @0", "libc6 2.36-9+deb12u14 @0", "zlib1g 1:1.2.13.dfsg-1 @0"]);
    assert.deepEqual(names(inv, "npm"), ["lodash 4.17.21 @0"]);
    assert.equal(inv.partial.length, 2);
    assert.equal(inv.partial[0]?.layerId, img.id(1));
    assert.equal(inv.partial[0]?.path, "/var/lib/dpkg/status");
    assert.match(inv.partial[0]?.reason ?? "", /3 unreadable stanza\(s\).*NUL/);
    assert.equal(inv.partial[1]?.layerId, img.id(2));
    assert.equal(inv.partial[1]?.path, `/${NM}/broken/package.json`);
    assert.match(inv.partial[1]?.reason ?? "", /not JSON/);
  });

  it("passes over an unknown middle view but never starts a run in one", async () => {
    // Bytes that are no text at all (a torn write of something else).
    const garbage = Buffer.concat(Array.from({ length: 64 }, (_, i) => createHash("sha256").update(String(i)).digest()));
    const img = image(4)
      .write(0, "var/lib/dpkg/status", status({ z: "9" }))
      .write(1, "var/lib/dpkg/status", status({ a: "1.0", c: "1.0" }))
      .write(2, "var/lib/dpkg/status", garbage)
      .write(3, "var/lib/dpkg/status", status({ a: "1.0", c: "2.0", n: "1.0" }));
    const inv = await img.inventory();
    // a: shown at 3 and at 1 with only the unknown layer 2 between -> 1. c: different at 1 -> 3.
    // n: not at 1, and the unknown layer 2 cannot start its run -> 3. z: gone.
    assert.deepEqual(names(inv), ["a 1.0 @1", "c 2.0 @3", "n 1.0 @3"]);
    assert.deepEqual(inv.partial.map((p) => [p.layerId, p.path]), [[img.id(2), "/var/lib/dpkg/status"]]);
  });

  it("stops a layer's search at the cap and says so", async () => {
    const img = image(1);
    for (let i = 0; i < 20; i++) img.write(0, `${NM}/p${String(i).padStart(2, "0")}/package.json`, manifest(`p${i}`, "1.0.0"));
    const inv = await img.inventory({ caps: { maxEntriesPerLayer: 40 } });
    assert.ok(inv.packages.length > 0 && inv.packages.length < 20, `${inv.packages.length} packages before the cap`);
    assert.equal(inv.partial.length, 1);
    assert.match(inv.partial[0]?.reason ?? "", /search stopped after 40 directory entries/);
    const full = await img.inventory();
    assert.equal(full.packages.length, 20);
  });

  it("fails clearly when a layer directory is gone", async () => {
    await assert.rejects(
      inventoryOf([{ diffId: "sha256:00", dir: path.join(tmp, "no-such-layer") }]),
      (err: unknown) => err instanceof ShadowError && err.code === Code.NotFound,
    );
    assert.deepEqual(await inventoryOf([]), { packages: [], partial: [] });
  });
});

describe("inventory of a real image on the engine", () => {
  let eng: TestEngine;
  let image: string;

  before(async () => {
    eng = await testEngine();
    image = (await ensureInventoryImage(eng.docker)).image;
  });

  it("reads each layer where overlay2 keeps it and attributes packages to the layers that installed them", async (t) => {
    const resolved = await new ImageLayerResolver(eng.docker, eng.info.rootDir).resolve(image);
    const { stdout } = await execFileP("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", image]);
    const diffIds = JSON.parse(stdout) as string[];
    assert.equal(diffIds.length, 5, "base + A + B + C + D");
    assert.deepEqual(resolved.layers.map((l) => l.diffId), diffIds);
    const layers = resolved.layers.map((l) => ({ diffId: l.diffId, dir: l.dir }));

    // What overlay2 made of layer D's RUN: a whiteout for left-pad, an opaque site-packages.
    const d = layers[4]?.dir ?? "";
    const wh = lstatSync(path.join(d, "usr/lib/node_modules/left-pad"));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0, "left-pad is a 0/0 whiteout in layer D");
    const venv = path.join(d, "opt/venv/lib/python3.11/site-packages");
    assert.equal(readOpaqueXattr(venv), true, "site-packages is opaque in layer D");
    assert.equal(readOpaqueXattr(path.dirname(venv)), false, "its parent is not");

    const started = performance.now();
    const inv = await inventoryOf(layers);
    const coldMs = performance.now() - started;
    const again = performance.now();
    await inventoryOf(layers);
    const warmMs = performance.now() - again;
    t.diagnostic(`inventory of ${image} (${layers.length} layers, ${inv.packages.length} packages): ${coldMs.toFixed(1)} ms, again ${warmMs.toFixed(1)} ms`);

    const ssl = find(inv, "deb", "libssl3");
    assert.deepEqual(ssl, {
      type: "deb",
      name: "libssl3",
      version: "3.0.11-1~deb12u2",
      sourceName: "openssl",
      sourceVersion: "3.0.11-1~deb12u2",
      path: "/var/lib/dpkg/status",
      layerIndex: 2,
      layerId: diffIds[2],
    });
    assert.equal(find(inv, "deb", "zlib1g"), undefined, "zlib1g was removed in layer B");
    assert.equal(inv.packages.some((p) => p.version === "3.0.9-1"), false, "the old libssl3 is not reported");
    const lodash = find(inv, "npm", "lodash");
    assert.equal(lodash?.version, "4.17.20");
    assert.equal(lodash?.layerId, diffIds[3]);
    assert.equal(lodash?.path, "/usr/lib/node_modules/lodash/package.json");
    const requests = find(inv, "pypi", "requests");
    assert.equal(requests?.version, "2.25.0");
    assert.equal(requests?.layerId, diffIds[3]);
    assert.equal(requests?.path, "/usr/lib/python3/dist-packages/requests-2.25.0.dist-info/METADATA");
    assert.equal(find(inv, "npm", "left-pad"), undefined, "left-pad was removed in layer D");
    assert.equal(find(inv, "pypi", "idna")?.layerId, diffIds[4]);
    assert.deepEqual(inv.os, { id: "debian", versionId: "12", versionCodename: "bookworm", prettyName: "Debian GNU/Linux 12 (bookworm)" });
    assert.equal(find(inv, "pypi", "six"), undefined, "six is below layer D's opaque site-packages");
    assert.deepEqual(inv.partial, []);
    assert.equal(inv.packages.length, 4);
  });
});
