/**
 * Matches an image's inventory against the index: each package to the advisories of its
 * ecosystem release (Debian and Ubuntu advisories name the source package: matched through it),
 * each hit evaluated by the OSV rule, then given its threat from CVSS, EPSS, KEV and fix facts.
 */
import { VulnMatchSchema, type ImageInventory, type OsRelease, type Package, type VulnMatch } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { cvss31BaseScore } from "./cvss.js";
import { compiledOf, type AdvisoryEntry, type NvdEntry, type VulnIndex } from "./index.js";
import { explain } from "./osv-eval.js";
import { schemeFor } from "./versions/index.js";
import { vulnThreat } from "./scoring.js";

export interface MatchProblems {
  /** Packages whose ecosystem release could not be told (no os-release, unknown distribution). */
  unknownEcosystem: number;
  /** Installed versions the ecosystem's rules cannot parse: matched against advisories' `versions[]` only. */
  unparseableVersion: number;
  samples: string[];
}

/** The ecosystem (base, release) a package's advisories live under, or undefined. */
export function ecosystemOf(p: Package, os: OsRelease | undefined): { base: string; release: string } | undefined {
  switch (p.type) {
    case "npm":
      return { base: "npm", release: "" };
    case "pypi":
      return { base: "PyPI", release: "" };
    case "deb":
      if (os?.id === "debian") return { base: "Debian", release: os.versionId.split(".")[0] ?? "" };
      if (os?.id === "ubuntu") return { base: "Ubuntu", release: os.versionId };
      return undefined;
    case "apk": {
      if (os?.id !== "alpine") return undefined;
      const [maj, min] = os.versionId.split(".");
      return maj !== undefined && min !== undefined ? { base: "Alpine", release: `v${maj}.${min}` } : undefined;
    }
    default:
      return undefined;
  }
}

/** The names (and the version to compare for each) under which advisories may list a package. */
function candidates(p: Package): Array<{ name: string; version: string }> {
  if (p.type === "deb") {
    const out = [{ name: p.sourceName || p.name, version: p.sourceVersion || p.version }];
    if (p.sourceName !== "" && p.sourceName !== p.name) out.push({ name: p.name, version: p.version });
    return out;
  }
  if (p.type === "apk" && p.sourceName !== "" && p.sourceName !== p.name) {
    return [
      { name: p.name, version: p.version },
      { name: p.sourceName, version: p.version },
    ];
  }
  return [{ name: p.name, version: p.version }];
}

export function matchInventory(index: VulnIndex, inv: ImageInventory, problems?: MatchProblems): VulnMatch[] {
  const out: VulnMatch[] = [];
  const seen = new Set<AdvisoryEntry>();
  for (const p of inv.packages) {
    // One advisory entry counts once per package, whichever of its names found it.
    seen.clear();
    const eco = ecosystemOf(p, inv.os);
    if (eco === undefined) {
      if (problems) problems.unknownEcosystem++;
      continue;
    }
    for (const c of candidates(p)) {
      const entries = index.lookup(eco.base, eco.release, c.name);
      if (entries.length === 0) continue;
      const scheme = entries[0]?.scheme ?? schemeFor(eco.base);
      const parsed = scheme?.parse(c.version);
      // Still matched: a version listed in an advisory's `versions[]` is affected as an exact
      // string, whatever its ecosystem's order makes of it (only the ranges need it parsed).
      if (parsed === undefined && problems) {
        problems.unparseableVersion++;
        if (problems.samples.length < 20) problems.samples.push(`${p.type} ${p.name} ${c.version}`);
      }
      for (const e of entries) {
        if (seen.has(e)) continue;
        const x = explain(compiledOf(e), c.version, e.scheme === scheme ? parsed : e.scheme.parse(c.version));
        if (!x.affected) continue;
        seen.add(e);
        out.push(toMatch(index, e, p, x.fixed ?? ""));
      }
    }
  }
  out.sort((a, b) => b.threat - a.threat || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return out;
}

function toMatch(index: VulnIndex, e: AdvisoryEntry, p: Package, fixed: string): VulnMatch {
  let cvss: number | undefined;
  let vector = "";
  let source = "default";
  // Severity by SCORING.md: NVD's v3, else the advisory's own v3 vector, else NVD's v4.0.
  let v40: NvdEntry | undefined;
  for (const cve of e.cves) {
    const n = index.nvd.get(cve);
    if (n === undefined) continue;
    if (n.vector.startsWith("CVSS:4.0/")) {
      v40 ??= n;
      continue;
    }
    cvss = n.baseScore;
    vector = n.vector;
    source = "nvd";
    break;
  }
  if (cvss === undefined && e.cvss3 !== undefined) {
    // Scored once per advisory, on first use.
    e.cvssScore ??= cvss31BaseScore(e.cvss3) ?? null;
    if (e.cvssScore !== null) {
      cvss = e.cvssScore.score;
      vector = e.cvssScore.vector;
      source = "osv";
    }
  }
  if (cvss === undefined && v40 !== undefined) {
    cvss = v40.baseScore;
    vector = v40.vector;
    source = "nvd";
  }
  let epss: { epss: number; percentile: number } | undefined;
  let kev: { dateAdded: string; ransomware: boolean } | undefined;
  for (const cve of e.cves) {
    epss ??= index.epss.get(cve);
    kev ??= index.kev.get(cve);
  }
  const threat = vulnThreat({ id: e.id, cvss, epss: epss?.epss, kev: kev !== undefined, kevRansomware: kev?.ransomware === true, fixAvailable: fixed !== "" });
  // A literal, not create(): matching makes thousands of these and create() walks the schema.
  const m: VulnMatch = {
    $typeName: VulnMatchSchema.typeName as VulnMatch["$typeName"],
    id: e.id,
    aliases: e.aliases,
    packageType: p.type,
    package: p.name,
    installedVersion: p.version,
    fixedVersion: fixed,
    layerId: p.layerId,
    ecosystem: e.ecosystem,
    advisoryPackage: e.name,
    summary: e.summary,
    cvss: cvss ?? 0,
    cvssVector: vector,
    cvssSource: source,
    epss: epss?.epss ?? 0,
    epssPercentile: epss?.percentile ?? 0,
    hasEpss: epss !== undefined,
    kev: kev !== undefined,
    kevRansomware: kev?.ransomware === true,
    kevDateAdded: kev?.dateAdded ?? "",
    threat,
  };
  return m;
}
