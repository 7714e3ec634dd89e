/**
 * The package-manager commands the `patch` strategy runs inside a helper container, and the
 * checks on what goes into them. Package names and versions come from an image's package
 * database and a feed: hostile input. Each is held to its distribution's grammar and only ever
 * becomes one argv element (never a shell string); anything else is refused with a reason.
 */
import { apkScheme, dpkgScheme, type VersionScheme } from "../vulns/versions/index.js";
import type { VulnerablePackage } from "./types.js";

export type PackageFamily = "deb" | "apk";

/** Debian policy §5.6.1: lower case letters, digits, "+", "-", "."; at least two, starting alphanumeric. */
const DEB_NAME = /^[a-z0-9][a-z0-9+.-]{1,127}$/;
/** Policy §5.6.12: [epoch:]upstream[-revision], upstream starting with a digit; no blanks, quotes or shell characters. */
const DEB_VERSION = /^(?:[0-9]{1,10}:)?[0-9][A-Za-z0-9.+~:-]{0,127}$/;
/** apk-tools' package names (lib/package.c apk_pkg_parse_name): no blanks, no "=<>~" operators, no leading "-". */
const APK_NAME = /^[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$/;
/** apk versions: digits first, then apk-tools' own grammar (checked by the apk scheme as well). */
const APK_VERSION = /^[0-9][0-9A-Za-z._-]{0,127}$/;

/** Why a package name cannot be handed to the package manager, or undefined when it can. */
export function checkPackageName(family: PackageFamily, name: string): string | undefined {
  const ok = family === "deb" ? DEB_NAME.test(name) : APK_NAME.test(name);
  return ok ? undefined : `package name ${JSON.stringify(name.slice(0, 80))} is not a valid ${family === "deb" ? "Debian" : "Alpine"} package name`;
}

/** Why a version cannot be handed to the package manager, or undefined when it can. */
export function checkPackageVersion(family: PackageFamily, version: string): string | undefined {
  const shaped = family === "deb" ? DEB_VERSION.test(version) && dpkgScheme.parse(version) !== undefined : APK_VERSION.test(version) && apkScheme.parse(version) !== undefined;
  return shaped ? undefined : `version ${JSON.stringify(version.slice(0, 80))} is not a valid ${family === "deb" ? "Debian" : "Alpine"} version`;
}

/** Why this vulnerable package cannot be patched (bad type, name, source name or versions), or undefined. */
export function checkVulnerablePackage(p: VulnerablePackage): string | undefined {
  if (p.type !== "deb" && p.type !== "apk") return `${JSON.stringify(p.type.slice(0, 20))} packages are not OS packages`;
  const family: PackageFamily = p.type;
  return (
    checkPackageName(family, p.name) ??
    (p.sourceName === "" ? undefined : checkPackageName(family, p.sourceName)) ??
    checkPackageVersion(family, p.installedVersion) ??
    checkPackageVersion(family, p.fixedVersion)
  );
}

/** Compares two versions of one family; both must have passed checkPackageVersion. */
export function comparePackageVersions(family: PackageFamily, a: string, b: string): number {
  const scheme: VersionScheme = family === "deb" ? dpkgScheme : apkScheme;
  const pa = scheme.parse(a);
  const pb = scheme.parse(b);
  if (pa === undefined || pb === undefined) throw new RangeError(`not ${family} versions: ${a} / ${b}`);
  return scheme.compare(pa, pb);
}

/** One installed binary package as an image's database lists it (already validated). */
export interface InstalledPackage {
  name: string;
  version: string;
  /** The source package (Debian `Source:`, Alpine `o:` origin); the binary's own name when absent. */
  sourceName: string;
  /** Debian: the version in `Source: name (version)` (binNMUs), else the binary's version. */
  sourceVersion: string;
}

/** An installed-package database read: the packages that passed the grammar, and why the others did not. */
export interface InstalledDatabase {
  packages: InstalledPackage[];
  refused: string[];
}

function stanzas(text: string): Array<Map<string, string>> {
  const out: Array<Map<string, string>> = [];
  for (const block of text.split(/\n[ \t]*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(" ") || line.startsWith("\t")) continue;
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const key = line.slice(0, colon).toLowerCase();
      if (!fields.has(key)) fields.set(key, line.slice(colon + 1).trim());
    }
    if (fields.size > 0) out.push(fields);
  }
  return out;
}

/** `var/lib/dpkg/status`: the installed packages ("install ok installed", or "hold ok installed"). */
export function readDpkgStatus(text: string): InstalledDatabase {
  const packages: InstalledPackage[] = [];
  const refused: string[] = [];
  for (const f of stanzas(text)) {
    const status = (f.get("status") ?? "").split(/\s+/);
    if (status[2] !== "installed") continue;
    const name = f.get("package") ?? "";
    const version = f.get("version") ?? "";
    const source = /^(\S+)(?:\s+\((\S+)\))?$/.exec(f.get("source") ?? name);
    const sourceName = source?.[1] ?? "";
    const sourceVersion = source?.[2] ?? version;
    const why =
      checkPackageName("deb", name) ??
      checkPackageVersion("deb", version) ??
      checkPackageName("deb", sourceName) ??
      checkPackageVersion("deb", sourceVersion);
    if (why !== undefined) refused.push(why);
    else packages.push({ name, version, sourceName, sourceVersion });
  }
  return { packages, refused };
}

/** `lib/apk/db/installed`: one stanza per package, `P:` name, `V:` version, `o:` origin. */
export function readApkInstalled(text: string): InstalledDatabase {
  const packages: InstalledPackage[] = [];
  const refused: string[] = [];
  for (const block of text.split(/\n\n+/)) {
    const f = new Map<string, string>();
    for (const line of block.split("\n")) if (line.length > 2 && line[1] === ":" && !f.has(line[0] ?? "")) f.set(line[0] ?? "", line.slice(2));
    const name = f.get("P");
    if (name === undefined) continue;
    const version = f.get("V") ?? "";
    const sourceName = f.get("o") ?? name;
    const why = checkPackageName("apk", name) ?? checkPackageVersion("apk", version) ?? checkPackageName("apk", sourceName);
    if (why !== undefined) refused.push(why);
    else packages.push({ name, version, sourceName, sourceVersion: version });
  }
  return { packages, refused };
}

/** One binary package to upgrade, and the source version it must reach. */
export interface UpgradeTarget {
  name: string;
  sourceName: string;
  /** The exact version to ask for, when the binary's version is its source's (no binNMU suffix). */
  pin?: string;
  fixedVersion: string;
  advisory: string;
}

/**
 * The binary packages built from each vulnerable source package that the image has installed
 * at a version below the fix (Debian: all binaries sharing `Source:`, since they depend on one
 * another at the exact version). A vulnerable package not found installed is an error string.
 */
export function planUpgrade(family: PackageFamily, installed: readonly InstalledPackage[], vulnerable: readonly VulnerablePackage[]): UpgradeTarget[] | string {
  const targets = new Map<string, UpgradeTarget>();
  for (const v of vulnerable) {
    const source = v.sourceName === "" ? v.name : v.sourceName;
    const built = installed.filter((p) => p.sourceName === source || p.name === v.name);
    if (built.length === 0) return `${v.name} (source ${source}) is not installed in the image`;
    for (const p of built) {
      if (comparePackageVersions(family, p.sourceVersion, v.fixedVersion) >= 0) continue;
      const prev = targets.get(p.name);
      if (prev !== undefined && comparePackageVersions(family, prev.fixedVersion, v.fixedVersion) >= 0) continue;
      targets.set(p.name, {
        name: p.name,
        sourceName: p.sourceName,
        ...(family === "deb" && p.version === p.sourceVersion ? { pin: v.fixedVersion } : {}),
        fixedVersion: v.fixedVersion,
        advisory: v.advisory,
      });
    }
  }
  return [...targets.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The targets whose installed source version is still below the fix (after the upgrade: should be none). */
export function unpatched(family: PackageFamily, installed: readonly InstalledPackage[], targets: readonly UpgradeTarget[]): string[] {
  const out: string[] = [];
  for (const t of targets) {
    const p = installed.find((i) => i.name === t.name);
    if (p === undefined) out.push(`${t.name}: no longer installed`);
    else if (comparePackageVersions(family, p.sourceVersion, t.fixedVersion) < 0) out.push(`${t.name}: ${p.version} is below ${t.fixedVersion}`);
  }
  return out;
}

/** Why a mirror URL cannot be used (not http(s), credentials, characters a sources line cannot hold), or undefined. */
export function checkMirrorUrl(mirror: string): string | undefined {
  let url: URL;
  try {
    url = new URL(mirror);
  } catch {
    return `package mirror ${JSON.stringify(mirror.slice(0, 80))} is not a URL`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return `package mirror ${url.protocol}// is not http(s)`;
  if (url.username !== "" || url.password !== "") return "package mirror URL holds credentials";
  if (!/^[\x21-\x7e]+$/.test(mirror) || /[\]["'`$\\#]/.test(mirror)) return `package mirror ${JSON.stringify(mirror.slice(0, 80))} holds characters a sources line cannot`;
  return undefined;
}

function isLoopback(mirror: string): boolean {
  const host = new URL(mirror).hostname;
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Where the helper containers keep apt's sources, lists and downloads: a volume, so none of it lands in the layer. */
export const APT_SCRATCH = "/var/cache/apt";
const APT_OWN = `${APT_SCRATCH}/shadowlayer`;

/** Directories and files the scratch volume starts with (paths relative to APT_SCRATCH). */
export function aptScratchEntries(mirror: string): Array<{ path: string; content?: string }> {
  return [
    { path: "shadowlayer/" },
    { path: "shadowlayer/sources.list.d/" },
    { path: "shadowlayer/apt.conf.d/" },
    { path: "shadowlayer/lists/" },
    { path: "shadowlayer/lists/partial/" },
    { path: "shadowlayer/archives/" },
    { path: "shadowlayer/archives/partial/" },
    { path: "shadowlayer/sources.list", content: aptSourcesList(mirror) },
  ];
}

/**
 * The only sources apt sees: the mirror as a flat repository (`Packages` at its root). A loopback
 * mirror is the builder's own (the test's, or one the operator serves next to the engine) and is
 * taken unsigned; any other must carry a Release file signed by a key the image trusts.
 */
export function aptSourcesList(mirror: string): string {
  const base = mirror.endsWith("/") ? mirror : `${mirror}/`;
  return `deb ${isLoopback(mirror) ? "[trusted=yes] " : ""}${base} ./\n`;
}

/**
 * Options that point apt at the scratch volume only: the image's own sources and apt.conf.d
 * (proxies, hooks, other repositories) are never read, and no proxy from the environment is used,
 * so apt talks to the mirror and nothing else.
 */
function aptOptions(): string[] {
  return [
    "-o", `Dir::Etc::SourceList=${APT_OWN}/sources.list`,
    "-o", `Dir::Etc::SourceParts=${APT_OWN}/sources.list.d/`,
    "-o", `Dir::Etc::Parts=${APT_OWN}/apt.conf.d/`,
    "-o", "Acquire::http::Proxy=DIRECT",
    "-o", "Acquire::https::Proxy=DIRECT",
    "-o", `Dir::State::Lists=${APT_OWN}/lists/`,
    "-o", `Dir::Cache::Archives=${APT_OWN}/archives/`,
    "-o", "Dir::Cache::pkgcache=",
    "-o", "Dir::Cache::srcpkgcache=",
    "-o", "Acquire::Languages=none",
    "-o", "Dpkg::Options::=--force-confdef",
    "-o", "Dpkg::Options::=--force-confold",
  ];
}

/**
 * The package manager's environment, set by `env` in the argv rather than on the container: the
 * helper's config must stay the source's, since the commit takes what it does not override.
 */
const ENV = ["env", "DEBIAN_FRONTEND=noninteractive", "APT_LISTCHANGES_FRONTEND=none"];

/** `apt-get update` against the mirror only. */
export function aptUpdateArgv(): string[] {
  return [...ENV, "apt-get", ...aptOptions(), "update"];
}

/** `apt-get install --only-upgrade` of the targets, each pinned to its fixed version where it can be. */
export function aptInstallArgv(targets: readonly UpgradeTarget[]): string[] {
  for (const t of targets) {
    const why = checkPackageName("deb", t.name) ?? (t.pin === undefined ? undefined : checkPackageVersion("deb", t.pin));
    if (why !== undefined) throw new RangeError(why);
  }
  return [
    ...ENV, "apt-get", ...aptOptions(), "install", "-y", "--only-upgrade", "--no-install-recommends",
    "--",
    ...targets.map((t) => (t.pin === undefined ? t.name : `${t.name}=${t.pin}`)),
  ];
}

/** `apk upgrade` of the targets from the mirror only (no index cache kept in the layer). */
export function apkUpgradeArgv(mirror: string, targets: readonly UpgradeTarget[]): string[] {
  for (const t of targets) {
    const why = checkPackageName("apk", t.name);
    if (why !== undefined) throw new RangeError(why);
  }
  return ["apk", "upgrade", "--no-cache", "--no-progress", "--repositories-file", "/dev/null", "--repository", mirror, "--", ...targets.map((t) => t.name)];
}
