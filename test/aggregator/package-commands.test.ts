import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  APT_SCRATCH,
  apkUpgradeArgv,
  aptInstallArgv,
  aptScratchEntries,
  aptSourcesList,
  aptUpdateArgv,
  checkMirrorUrl,
  checkPackageName,
  checkPackageVersion,
  checkVulnerablePackage,
  planUpgrade,
  readApkInstalled,
  readDpkgStatus,
  unpatched,
} from "../../aggregator/rebuild/package-commands.js";
import type { VulnerablePackage } from "../../aggregator/rebuild/types.js";

// Stanzas as a debootstrapped bookworm's /var/lib/dpkg/status has them (trimmed), plus hostile ones.
const STATUS = `Package: perl-base
Essential: yes
Status: install ok installed
Architecture: amd64
Source: perl
Version: 5.36.0-7+deb12u3
Description: minimal Perl system
 Perl is a scripting language used in many system scripts and utilities.
 .
 Source: not-a-field (continuation lines are not fields)

Package: libc-bin
Status: install ok installed
Architecture: amd64
Multi-Arch: foreign
Source: glibc
Version: 2.36-9+deb12u14

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u14

Package: bash
Essential: yes
Status: install ok installed
Architecture: amd64
Source: bash (5.2.15-2)
Version: 5.2.15-2+b13

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: evil$(touch /tmp/pwned)
Status: install ok installed
Architecture: amd64
Version: 1.0-1

Package: evil-version
Status: install ok installed
Architecture: amd64
Version: 1.0 ; rm -rf /
`;

function vuln(p: Partial<VulnerablePackage>): VulnerablePackage {
  return { name: "perl-base", sourceName: "perl", installedVersion: "5.36.0-7+deb12u3", fixedVersion: "5.36.0-7+deb12u4", type: "deb", layerId: "sha256:l", advisory: "CVE-2026-8376", ...p };
}

describe("package names and versions from an image are held to their grammar", () => {
  it("accepts real Debian and Alpine names and versions", () => {
    for (const n of ["perl-base", "libc6", "libstdc++6", "g++-12", "libpcre2-8-0", "xz-utils", "ca-certificates"]) assert.equal(checkPackageName("deb", n), undefined, n);
    for (const v of ["5.36.0-7+deb12u4", "1:1.2.13.dfsg-1", "2.36-9+deb12u14", "5.2.15-2+b13", "2026f-0+deb12u1", "1.0~rc1-1", "3.0.11-1~deb12u2"]) assert.equal(checkPackageVersion("deb", v), undefined, v);
    for (const n of ["musl", "libcrypto3", "py3-six", "busybox-binsh", "libstdc++"]) assert.equal(checkPackageName("apk", n), undefined, n);
    for (const v of ["1.2.4-r3", "3.1.4-r5", "1.36.1-r15", "2024a-r0"]) assert.equal(checkPackageVersion("apk", v), undefined, v);
  });

  it("refuses shell syntax, blanks, quotes, newlines, a leading dash and upper case in Debian names", () => {
    for (const n of ["perl$(id)", "perl base", "perl'base", 'perl"base', "perl\nbase", "-oAPT::X=1", "--force-yes", "Perl", "p", "perl;ls", "perl|ls", "perl`id`", "perl>x", "", "perl=1.0", "perl/stable", "perl:amd64"]) {
      assert.match(checkPackageName("deb", n) ?? "", /not a valid Debian package name/, JSON.stringify(n));
    }
    for (const n of ["-x", "a b", "a$(b)", "a=1", "a>1", "a\tb", "a'b"]) assert.ok(checkPackageName("apk", n) !== undefined, JSON.stringify(n));
  });

  it("refuses versions that are not versions", () => {
    for (const v of ["", "1.0 other", "1.0\nx", "$(id)", "`id`", "-1.0", "a1.0", "1.0;x", "1.0'", "1:", "1.0-", "1.0/x"]) {
      assert.ok(checkPackageVersion("deb", v) !== undefined, JSON.stringify(v));
    }
    for (const v of ["", "r1", "1.0 x", "1.0;x", "$(id)"]) assert.ok(checkPackageVersion("apk", v) !== undefined, JSON.stringify(v));
  });

  it("checks every field of a vulnerable package, and its type", () => {
    assert.equal(checkVulnerablePackage(vuln({})), undefined);
    assert.equal(checkVulnerablePackage(vuln({ sourceName: "" })), undefined);
    assert.match(checkVulnerablePackage(vuln({ type: "npm", name: "lodash" })) ?? "", /not OS packages/);
    assert.match(checkVulnerablePackage(vuln({ name: "perl base" })) ?? "", /name/);
    assert.match(checkVulnerablePackage(vuln({ sourceName: "perl$(id)" })) ?? "", /name/);
    assert.match(checkVulnerablePackage(vuln({ installedVersion: "x y" })) ?? "", /version/);
    assert.match(checkVulnerablePackage(vuln({ fixedVersion: "5.36.0-7+deb12u4\nperl" })) ?? "", /version/);
  });
});

describe("installed-package databases", () => {
  it("reads installed dpkg packages with their source, and refuses hostile entries", () => {
    const db = readDpkgStatus(STATUS);
    assert.deepEqual(db.packages, [
      { name: "perl-base", version: "5.36.0-7+deb12u3", sourceName: "perl", sourceVersion: "5.36.0-7+deb12u3" },
      { name: "libc-bin", version: "2.36-9+deb12u14", sourceName: "glibc", sourceVersion: "2.36-9+deb12u14" },
      { name: "libc6", version: "2.36-9+deb12u14", sourceName: "glibc", sourceVersion: "2.36-9+deb12u14" },
      { name: "bash", version: "5.2.15-2+b13", sourceName: "bash", sourceVersion: "5.2.15-2" },
    ]);
    assert.equal(db.refused.length, 2);
    assert.match(db.refused.join("\n"), /evil\$\(touch/);
    assert.match(db.refused.join("\n"), /1\.0 ; rm -rf/);
  });

  it("reads apk's installed database with each package's origin", () => {
    const db = readApkInstalled("C:Q1abc=\nP:libcrypto3\nV:3.1.4-r1\no:openssl\n\nP:musl\nV:1.2.4-r2\n\nP:bad name\nV:1.0-r0\n");
    assert.deepEqual(db.packages, [
      { name: "libcrypto3", version: "3.1.4-r1", sourceName: "openssl", sourceVersion: "3.1.4-r1" },
      { name: "musl", version: "1.2.4-r2", sourceName: "musl", sourceVersion: "1.2.4-r2" },
    ]);
    assert.equal(db.refused.length, 1);
  });
});

describe("the upgrade plan", () => {
  const installed = readDpkgStatus(STATUS).packages;

  it("upgrades every binary built from the vulnerable source, pinned to the fixed version", () => {
    const plan = planUpgrade("deb", installed, [vuln({ name: "libc6", sourceName: "glibc", installedVersion: "2.36-9+deb12u14", fixedVersion: "2.36-9+deb12u15", advisory: "CVE-X" })]);
    assert.deepEqual(plan, [
      { name: "libc-bin", sourceName: "glibc", pin: "2.36-9+deb12u15", fixedVersion: "2.36-9+deb12u15", advisory: "CVE-X" },
      { name: "libc6", sourceName: "glibc", pin: "2.36-9+deb12u15", fixedVersion: "2.36-9+deb12u15", advisory: "CVE-X" },
    ]);
  });

  it("does not pin a binNMU (its binary version is not the source's), and skips what is already fixed", () => {
    assert.deepEqual(planUpgrade("deb", installed, [vuln({ name: "bash", sourceName: "bash", installedVersion: "5.2.15-2", fixedVersion: "5.2.15-2+deb12u1" })]), [
      { name: "bash", sourceName: "bash", fixedVersion: "5.2.15-2+deb12u1", advisory: "CVE-2026-8376" },
    ]);
    assert.deepEqual(planUpgrade("deb", installed, [vuln({ fixedVersion: "5.36.0-7+deb12u3" })]), []);
  });

  it("keeps the highest fix when two advisories name one package", () => {
    const plan = planUpgrade("deb", installed, [vuln({ fixedVersion: "5.36.0-7+deb12u5", advisory: "A" }), vuln({ fixedVersion: "5.36.0-7+deb12u4", advisory: "B" })]);
    assert.ok(typeof plan !== "string");
    assert.deepEqual(plan.map((t) => [t.name, t.pin, t.advisory]), [["perl-base", "5.36.0-7+deb12u5", "A"]]);
  });

  it("says so when the vulnerable package is not installed", () => {
    assert.match(String(planUpgrade("deb", installed, [vuln({ name: "openssl", sourceName: "openssl" })])), /not installed/);
  });

  it("after the upgrade, lists what is still below its fix", () => {
    const plan = planUpgrade("deb", installed, [vuln({})]);
    assert.ok(typeof plan !== "string");
    assert.deepEqual(unpatched("deb", installed, plan), ["perl-base: 5.36.0-7+deb12u3 is below 5.36.0-7+deb12u4"]);
    const after = installed.map((p) => (p.name === "perl-base" ? { ...p, version: "5.36.0-7+deb12u4", sourceVersion: "5.36.0-7+deb12u4" } : p));
    assert.deepEqual(unpatched("deb", after, plan), []);
    assert.deepEqual(unpatched("deb", [], plan), ["perl-base: no longer installed"]);
  });
});

describe("the mirror and the argv", () => {
  it("takes only plain http(s) mirror URLs", () => {
    assert.equal(checkMirrorUrl("http://127.0.0.1:8080/"), undefined);
    assert.equal(checkMirrorUrl("https://mirror.example/debian-patches"), undefined);
    for (const bad of ["ftp://m/", "file:///srv/repo", "http://u:p@m/", "http://m/ ./\ndeb http://evil/ ./", "http://m/]", "http://m/$(id)", "not a url"]) {
      assert.ok(checkMirrorUrl(bad) !== undefined, bad);
    }
  });

  it("writes a sources list naming only the mirror, trusted unsigned only on loopback", () => {
    assert.equal(aptSourcesList("http://127.0.0.1:41234"), "deb [trusted=yes] http://127.0.0.1:41234/ ./\n");
    assert.equal(aptSourcesList("https://mirror.example/patches/"), "deb https://mirror.example/patches/ ./\n");
    const entries = aptScratchEntries("http://127.0.0.1:1/");
    assert.deepEqual(entries.filter((e) => e.content !== undefined), [{ path: "shadowlayer/sources.list", content: "deb [trusted=yes] http://127.0.0.1:1/ ./\n" }]);
  });

  it("points apt at the scratch volume only (sources, configuration parts, lists, archives), with no proxy", () => {
    const argv = aptUpdateArgv();
    assert.deepEqual(argv.slice(0, 4), ["env", "DEBIAN_FRONTEND=noninteractive", "APT_LISTCHANGES_FRONTEND=none", "apt-get"]);
    assert.equal(argv.at(-1), "update");
    const opts = argv.filter((_, i) => argv[i - 1] === "-o");
    assert.ok(opts.includes("Acquire::http::Proxy=DIRECT") && opts.includes("Acquire::https::Proxy=DIRECT"));
    for (const key of ["Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::Etc::Parts", "Dir::State::Lists", "Dir::Cache::Archives"]) {
      const o = opts.find((x) => x.startsWith(`${key}=`));
      assert.ok(o?.startsWith(`${key}=${APT_SCRATCH}/shadowlayer/`), `${key}: ${String(o)}`);
    }
  });

  it("installs with --only-upgrade, each package one argv element after --", () => {
    const argv = aptInstallArgv([
      { name: "libc6", sourceName: "glibc", pin: "2.36-9+deb12u15", fixedVersion: "2.36-9+deb12u15", advisory: "A" },
      { name: "bash", sourceName: "bash", fixedVersion: "5.2.15-2+deb12u1", advisory: "B" },
    ]);
    const sep = argv.indexOf("--");
    assert.deepEqual(argv.slice(sep - 4, sep), ["install", "-y", "--only-upgrade", "--no-install-recommends"]);
    assert.deepEqual(argv.slice(sep + 1), ["libc6=2.36-9+deb12u15", "bash"]);
  });

  it("never builds an argv around a name that slipped past the checks", () => {
    assert.throws(() => aptInstallArgv([{ name: "$(id)", sourceName: "x", fixedVersion: "1", advisory: "A" }]), RangeError);
    assert.throws(() => aptInstallArgv([{ name: "ok", sourceName: "x", pin: "1 2", fixedVersion: "1", advisory: "A" }]), RangeError);
    assert.throws(() => apkUpgradeArgv("http://127.0.0.1:1/", [{ name: "-X", sourceName: "x", fixedVersion: "1", advisory: "A" }]), RangeError);
  });

  it("upgrades Alpine packages from the mirror only, with no index cache", () => {
    assert.deepEqual(apkUpgradeArgv("http://127.0.0.1:9/alpine", [{ name: "libcrypto3", sourceName: "openssl", fixedVersion: "3.1.4-r5", advisory: "A" }]), [
      "apk", "upgrade", "--no-cache", "--no-progress", "--repositories-file", "/dev/null", "--repository", "http://127.0.0.1:9/alpine", "--", "libcrypto3",
    ]);
  });
});
