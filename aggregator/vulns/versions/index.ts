/**
 * Version ordering per OSV ecosystem: the one entry point to the dpkg, apk, SemVer and PEP 440
 * schemes. Parse once (at ingest, or once per installed package), then compare parsed forms.
 */
import { Code, ShadowError } from "../../../common/errors.js";
import { apkScheme } from "./apk.js";
import { dpkgScheme } from "./dpkg.js";
import { pep440Scheme } from "./pep440.js";
import { semverScheme } from "./semver.js";
import type { VersionScheme } from "./version-scheme.js";

export type BaseEcosystem = "Debian" | "Ubuntu" | "Alpine" | "npm" | "PyPI";

export type { VersionScheme } from "./version-scheme.js";

export { apkScheme, dpkgScheme, pep440Scheme, semverScheme };

const SCHEMES: ReadonlyMap<string, VersionScheme> = new Map<string, VersionScheme>([
  ["Debian", dpkgScheme],
  ["Ubuntu", dpkgScheme],
  ["Alpine", apkScheme],
  ["npm", semverScheme],
  ["PyPI", pep440Scheme],
]);

/**
 * Splits an OSV ecosystem string: "Debian:12" -> Debian / 12, "Ubuntu:22.04:LTS" -> Ubuntu /
 * 22.04 / LTS, "npm" -> npm / "" / "". Ubuntu's ":Pro:" marker (before the release) joins the
 * qualifier: "Ubuntu:Pro:18.04:LTS" -> Ubuntu / 18.04 / "Pro:LTS".
 */
export function splitEcosystem(ecosystem: string): { base: string; release: string; qualifier: string } {
  const parts = ecosystem.split(":");
  const base = parts[0] ?? "";
  if (base === "Ubuntu" && parts[1] === "Pro") {
    return { base, release: parts[2] ?? "", qualifier: ["Pro", ...parts.slice(3)].join(":") };
  }
  return { base, release: parts[1] ?? "", qualifier: parts.slice(2).join(":") };
}

/** The scheme of an ecosystem string (names are case-sensitive, as in OSV); undefined for others. */
export function schemeFor(ecosystem: string): VersionScheme | undefined {
  const colon = ecosystem.indexOf(":");
  return SCHEMES.get(colon < 0 ? ecosystem : ecosystem.slice(0, colon));
}

/** Convenience for tests and tools: parses both and compares; throws on anything invalid. */
export function compareVersions(ecosystem: string, a: string, b: string): number {
  const scheme = schemeFor(ecosystem);
  if (scheme === undefined) throw new ShadowError(Code.InvalidArgument, `no version scheme for ecosystem "${ecosystem}"`);
  const pa = scheme.parse(a);
  if (pa === undefined) throw new ShadowError(Code.InvalidArgument, `"${a}" is not a valid ${scheme.name} version`);
  const pb = scheme.parse(b);
  if (pb === undefined) throw new ShadowError(Code.InvalidArgument, `"${b}" is not a valid ${scheme.name} version`);
  return scheme.compare(pa, pb);
}
