/**
 * One feed's records as the vulnerability index takes them: a map per kind, filled record by
 * record while a source is read or a stored generation loaded, then installed whole.
 */
import type { EpssRecord } from "./parse/epss.js";
import type { KevRecord } from "./parse/kev.js";
import type { NvdRecord } from "./parse/nvd.js";
import type { OsvRecord } from "./parse/osv.js";
import type { FeedKind } from "./feed-config.js";
import { VulnIndex, type AdvisoryEntry, type EpssEntry, type KevEntry, type NvdEntry } from "../vulns/index.js";

export interface RecordMaps {
  osv: Map<string, AdvisoryEntry[]>;
  kev: Map<string, KevEntry>;
  epss: Map<string, EpssEntry>;
  nvd: Map<string, NvdEntry>;
}

export function newMaps(): RecordMaps {
  return { osv: new Map(), kev: new Map(), epss: new Map(), nvd: new Map() };
}

/** The id a record is kept under (OSV id, KEV cveID, EPSS/NVD cve); undefined when it has none. */
export function recordKey(kind: FeedKind, r: unknown): string | undefined {
  const o = r as Record<string, unknown>;
  const k = kind === "osv" ? o["id"] : kind === "kev" ? o["cveID"] : o["cve"];
  return typeof k === "string" && k !== "" ? k : undefined;
}

export function addToMaps(kind: FeedKind, m: RecordMaps, r: unknown): void {
  switch (kind) {
    case "osv": {
      const rec = r as OsvRecord;
      m.osv.set(rec.id, VulnIndex.compile(rec));
      break;
    }
    case "kev": {
      const k = r as KevRecord;
      m.kev.set(k.cveID, { dateAdded: k.dateAdded, ransomware: k.knownRansomwareCampaignUse });
      break;
    }
    case "epss": {
      const e = r as EpssRecord;
      m.epss.set(e.cve, { epss: e.epss, percentile: e.percentile });
      break;
    }
    case "nvd": {
      const n = r as NvdRecord;
      // v3 first: scores stay on one scale wherever a v3 one exists (aggregator/vulns/SCORING.md).
      const c = n.cvss31 ?? n.cvss40;
      if (c !== undefined) m.nvd.set(n.cve, { vector: c.vector, baseScore: c.baseScore });
      break;
    }
  }
}

export function recordCount(kind: FeedKind, m: RecordMaps): number {
  return kind === "osv" ? m.osv.size : kind === "kev" ? m.kev.size : kind === "epss" ? m.epss.size : m.nvd.size;
}
