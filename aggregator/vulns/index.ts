/**
 * The in-memory vulnerability index the matcher reads: OSV advisories compiled per (ecosystem,
 * release, package name), plus KEV, EPSS and NVD by CVE id. Built from the feeds' stored records
 * (level is the truth; this is rebuilt from it on start and after each feed refresh).
 */
import { normalizePypiName } from "../../common/package-names.js";
import type { OsvRecord } from "../feeds/parse/osv.js";
import { compileAffected, type CompiledAffected, type OsvAffected } from "./osv-eval.js";
import { schemeFor, splitEcosystem, type VersionScheme } from "./versions/index.js";

export interface AdvisoryEntry {
  id: string;
  /** CVE ids among the id and aliases (for KEV, EPSS, NVD). */
  cves: string[];
  aliases: string[];
  summary: string;
  cvss3: string | undefined;
  ecosystem: string;
  name: string;
  scheme: VersionScheme;
  /**
   * The OSV ranges and versions as JSON text, compiled on first use: most advisories are never
   * looked up, and a string takes a fraction of the memory of the objects it describes.
   */
  affected: string;
  compiled?: CompiledAffected;
  /** The CVSS v3 vector's base score, computed on first use (null: invalid vector). */
  cvssScore?: { score: number; vector: string } | null;
}

/** The entry's compiled ranges (every event version parsed once, on first use). */
export function compiledOf(e: AdvisoryEntry): CompiledAffected {
  e.compiled ??= compileAffected(JSON.parse(e.affected) as OsvAffected, e.scheme).compiled;
  return e.compiled;
}


/** Shares equal strings (ecosystems, CVSS vectors repeat across thousands of advisories). */
const interned = new Map<string, string>();
function intern(s: string): string {
  const hit = interned.get(s);
  if (hit !== undefined) return hit;
  if (interned.size < 100_000) interned.set(s, s);
  return s;
}

export interface KevEntry {
  dateAdded: string;
  ransomware: boolean;
}

export interface EpssEntry {
  epss: number;
  percentile: number;
}

export interface NvdEntry {
  vector: string;
  baseScore: number;
}

const CVE = /^CVE-\d{4}-\d{4,}$/;
const NO_ALIASES: string[] = [];

/** The index key of a package in an ecosystem; release "" for ecosystems without releases. */
export function packageKey(base: string, release: string, name: string): string {
  return `${base}|${release}|${base === "PyPI" ? normalizePypiName(name) : name}`;
}

export interface IndexStats {
  advisories: number;
  entries: number;
  compileProblems: number;
}

export class VulnIndex {
  private readonly byPackage = new Map<string, AdvisoryEntry[]>();
  /** OSV records per feed name, so one feed's refresh replaces only its own. */
  private readonly osvFeeds = new Map<string, Map<string, AdvisoryEntry[]>>();
  kev = new Map<string, KevEntry>();
  epss = new Map<string, EpssEntry>();
  nvd = new Map<string, NvdEntry>();
  /** Increases on every change, so scores know when to recompute. */
  generation = 0;
  readonly stats: IndexStats = { advisories: 0, entries: 0, compileProblems: 0 };

  /** One record's entries (none for withdrawn ones or unknown ecosystems); ranges compile lazily. */
  static compile(r: OsvRecord): AdvisoryEntry[] {
    if (r.withdrawn !== undefined && r.withdrawn !== "") return [];
    const cves = [r.id, ...r.aliases].filter((x) => CVE.test(x));
    const out: AdvisoryEntry[] = [];
    for (const a of r.affected) {
      const scheme = schemeFor(a.ecosystem);
      if (scheme === undefined) continue;
      const sev = a.severity?.find((s) => s.type.startsWith("CVSS_V3"))?.score ?? r.severity.find((s) => s.type.startsWith("CVSS_V3"))?.score;
      out.push({
        id: r.id,
        cves,
        aliases: r.aliases.length === 0 ? NO_ALIASES : r.aliases,
        summary: (r.summary ?? "").slice(0, 160),
        cvss3: sev === undefined ? (r.cvss3 === undefined ? undefined : intern(r.cvss3)) : intern(sev),
        ecosystem: intern(a.ecosystem),
        name: a.name,
        scheme,
        affected: JSON.stringify({ ranges: a.ranges, versions: a.versions }),
      });
    }
    return out;
  }

  /** Replaces everything one OSV feed contributed. */
  replaceOsvFeed(feed: string, entries: Map<string, AdvisoryEntry[]>): void {
    this.osvFeeds.set(feed, entries);
    this.rebuildPackages();
  }

  private rebuildPackages(): void {
    this.byPackage.clear();
    let advisories = 0;
    let n = 0;
    // Several feeds may carry the same advisory id: the later feed's copy wins.
    const seen = new Map<string, AdvisoryEntry[]>();
    for (const feed of this.osvFeeds.values()) for (const [id, list] of feed) seen.set(id, list);
    for (const list of seen.values()) {
      advisories++;
      for (const e of list) {
        const { base, release } = splitEcosystem(e.ecosystem);
        const key = packageKey(base, release, e.name);
        let bucket = this.byPackage.get(key);
        if (bucket === undefined) this.byPackage.set(key, (bucket = []));
        bucket.push(e);
        n++;
      }
    }
    this.stats.advisories = advisories;
    this.stats.entries = n;
    this.generation++;
  }

  setKev(m: Map<string, KevEntry>): void {
    this.kev = m;
    this.generation++;
  }

  setEpss(m: Map<string, EpssEntry>): void {
    this.epss = m;
    this.generation++;
  }

  setNvd(m: Map<string, NvdEntry>): void {
    this.nvd = m;
    this.generation++;
  }

  /** Advisories for a package name in an ecosystem release (plus those with no release given). */
  lookup(base: string, release: string, name: string): AdvisoryEntry[] {
    const exact = this.byPackage.get(packageKey(base, release, name)) ?? [];
    if (release === "") return exact;
    const any = this.byPackage.get(packageKey(base, "", name));
    return any === undefined ? exact : [...exact, ...any];
  }
}
