/**
 * Package URLs of the four package types the inventory reads, against the purl specification's
 * own test cases (its test-suite-data.json and tests/types/{deb,apk,npm,pypi}-test.json).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PackageURL } from "packageurl-js";
import { purlOf } from "../../cli/sbom.js";
import { OsReleaseSchema, PackageSchema, type OsRelease } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";

const pkg = (type: string, name: string, version: string) => create(PackageSchema, { type, name, version, layerId: "sha256:l", path: "/x" });
const os = (id: string, versionId = ""): OsRelease => create(OsReleaseSchema, { id, versionId });

describe("package URLs", () => {
  it("build the purl specification's canonical strings (less the arch qualifiers an inventory does not know)", () => {
    const cases: Array<[ReturnType<typeof pkg>, OsRelease | undefined, string]> = [
      // deb-test.json
      [pkg("deb", "curl", "7.50.3-1"), os("debian"), "pkg:deb/debian/curl@7.50.3-1"],
      [pkg("deb", "dpkg", "1.19.0.4"), os("ubuntu"), "pkg:deb/ubuntu/dpkg@1.19.0.4"],
      [pkg("deb", "attr", "1:2.4.47-2"), os("debian"), "pkg:deb/debian/attr@1:2.4.47-2"],
      [pkg("deb", "attr", "1:2.4.47-2+b1"), os("debian"), "pkg:deb/debian/attr@1:2.4.47-2%2Bb1"],
      // apk-test.json ("distro=alpine-edge"; its arch and upstream qualifiers left out)
      [pkg("apk", "curl", "7.83.0-r0"), undefined, "pkg:apk/alpine/curl@7.83.0-r0"],
      [pkg("apk", "libcrypto3", "3.5.5-r0"), os("alpine", "edge"), "pkg:apk/alpine/libcrypto3@3.5.5-r0?distro=alpine-edge"],
      // npm-test.json and test-suite-data.json: a scope is the namespace, its "@" encoded
      [pkg("npm", "@angular/animation", "12.3.1"), undefined, "pkg:npm/%40angular/animation@12.3.1"],
      [pkg("npm", "foobar", "12.3.1"), undefined, "pkg:npm/foobar@12.3.1"],
      [pkg("npm", "LoDash", "4.17.21"), undefined, "pkg:npm/lodash@4.17.21"],
      // pypi-test.json and test-suite-data.json: PEP 503 names
      [pkg("pypi", "Django_package", "1.11.1.dev1"), undefined, "pkg:pypi/django-package@1.11.1.dev1"],
      [pkg("pypi", "My.PyPI_.--._Package", "1.11.1.dev1"), undefined, "pkg:pypi/my-pypi-package@1.11.1.dev1"],
      [pkg("pypi", "django-allauth", "12.23"), undefined, "pkg:pypi/django-allauth@12.23"],
    ];
    for (const [p, o, want] of cases) assert.equal(purlOf(p, o), want, `${p.type} ${p.name}@${p.version}`);
  });

  it("give deb and apk packages their distribution release as the distro qualifier", () => {
    assert.equal(purlOf(pkg("deb", "libssl3", "3.0.11-1~deb12u2"), os("debian", "12")), "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?distro=debian-12");
    assert.equal(purlOf(pkg("deb", "libc6", "2.35-0ubuntu3.8"), os("ubuntu", "22.04")), "pkg:deb/ubuntu/libc6@2.35-0ubuntu3.8?distro=ubuntu-22.04");
    assert.equal(purlOf(pkg("deb", "libc6", "2.36-9+deb12u4"), undefined), "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4", "no os-release: debian, no qualifier");
    assert.equal(purlOf(pkg("apk", "musl", "1.2.4-r2"), os("alpine", "3.19.1")), "pkg:apk/alpine/musl@1.2.4-r2?distro=alpine-3.19.1");
  });

  it("parse back to the package's own name and version", () => {
    for (const [p, o] of [
      [pkg("deb", "libc6", "1:2.36-9+deb12u4"), os("debian", "12")],
      [pkg("npm", "@types/node", "20.19.0-beta+x"), undefined],
      [pkg("apk", "busybox", "1.36.1-r15"), os("alpine", "3.19.1")],
    ] as const) {
      const parsed = PackageURL.fromString(purlOf(p, o) ?? "");
      const name = parsed.namespace !== undefined && p.type === "npm" ? `${parsed.namespace}/${parsed.name}` : parsed.name;
      assert.equal(name, p.name);
      assert.equal(parsed.version, p.version);
      if (o !== undefined) assert.equal(parsed.qualifiers?.distro, `${o.id}-${o.versionId}`);
    }
  });

  it("fall back to generic for other types, and give none for a name that cannot make one", () => {
    assert.equal(purlOf(pkg("gem", "rails", "7.1.0"), undefined), "pkg:generic/rails@7.1.0");
    assert.equal(purlOf(pkg("deb", "", "1.0"), os("debian", "12")), undefined);
  });
});
