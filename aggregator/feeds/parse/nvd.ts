/** NVD CVE API 2.0 pages (https://nvd.nist.gov/developers/vulnerabilities): the CVSS v3 and v4.0 scores of each CVE. */
import type { Readable } from "node:stream";
import { cvss31BaseScore, cvss40BaseScore, cvss40VectorScore, severityOf, statedScoreAgrees } from "../../vulns/cvss.js";
import {
  type FeedItem,
  type FeedStream,
  boundedString,
  cveId,
  dateField,
  feedStream,
  isObject,
  numberInRange,
  objectOf,
  reject,
  stringField,
  validated,
} from "./types.js";
import { fromFrame } from "../decode/frame-item.js";
import { decoded } from "../decode/gzip-sniff.js";
import { jsonFrames } from "../decode/json-framer.js";

export interface NvdCvss {
  version: "3.1" | "3.0" | "4.0";
  /** v3: as published (checked against the grammar). v4.0: the base vector (NVD writes every metric, the undefined ones as X). */
  vector: string;
  /** Computed from the vector (cvss.ts): v3 its base score, v4.0 its CVSS-B score. */
  baseScore: number;
  severity: string;
  /** What NVD published when it contradicts the vector (more than one rounding step apart); not used. */
  rejected?: { baseScore: number; severity: string };
  /** Who scored it: nvd@nist.gov for NVD's own (Primary) score, a CNA's address otherwise. */
  source: string;
  type: "Primary" | "Secondary";
}

export interface NvdRecord {
  cve: string;
  /** The chosen CVSS v3 metric: Primary v3.1, else any v3.1, else Primary v3.0, else any v3.0. */
  cvss31?: NvdCvss;
  /** The chosen CVSS v4.0 metric: Primary, else any. */
  cvss40?: NvdCvss;
  published?: string;
  lastModified?: string;
  /** "Analyzed", "Modified", "Rejected", ... */
  vulnStatus?: string;
}

/** The page counters, to fetch the next page (startIndex + resultsPerPage < totalResults). */
export interface NvdMeta {
  resultsPerPage?: number;
  startIndex?: number;
  totalResults?: number;
  format?: string;
  version?: string;
  timestamp?: string;
}

const SEVERITIES = new Set(["NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"]);

/** Reasons counted through `drop`, each for one metric. */
const NVD_DROPS = {
  /** Not the shape of a metric (no cvssData, wrong version or type, no score): the metric is dropped. */
  invalid: "invalid metric",
  /** A vector outside its CVSS version's grammar: the metric is dropped. */
  vector: "invalid cvss vector",
  /** A published score or severity the vector contradicts: kept, scored from the vector. */
  contradiction: "stated score contradicts vector",
} as const;

/** One `vulnerabilities[]` element; a malformed metric is dropped (reported through `drop`), not the CVE. */
export function parseNvdRecord(json: unknown, drop?: (reason: string) => void): FeedItem<NvdRecord> {
  const idOf = (j: unknown): string | undefined =>
    isObject(j) && isObject(j.cve) && typeof j.cve.id === "string" ? j.cve.id.slice(0, 64) : undefined;
  return validated(json, idOf, (j) => {
    const cve = objectOf(objectOf(j, "entry").cve, "cve");
    const record: NvdRecord = { cve: cveId(cve.id, "cve.id") };
    const published = dateField(cve, "published");
    const lastModified = dateField(cve, "lastModified");
    const vulnStatus = stringField(cve, "vulnStatus", { max: 64 });
    if (published !== undefined) record.published = published;
    if (lastModified !== undefined) record.lastModified = lastModified;
    if (vulnStatus !== undefined) record.vulnStatus = vulnStatus;
    const metrics = cve.metrics;
    if (metrics !== undefined && !isObject(metrics)) drop?.(NVD_DROPS.invalid);
    if (isObject(metrics)) {
      const v31 = validMetrics(metrics.cvssMetricV31, "3.1", drop);
      const v30 = validMetrics(metrics.cvssMetricV30, "3.0", drop);
      const chosen =
        v31.find((m) => m.type === "Primary") ?? v31[0] ?? v30.find((m) => m.type === "Primary") ?? v30[0];
      if (chosen !== undefined) record.cvss31 = chosen;
      const v40 = validMetrics(metrics.cvssMetricV40, "4.0", drop);
      const chosen4 = v40.find((m) => m.type === "Primary") ?? v40[0];
      if (chosen4 !== undefined) record.cvss40 = chosen4;
    }
    return record;
  });
}

function validMetrics(list: unknown, version: NvdCvss["version"], drop?: (reason: string) => void): NvdCvss[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) {
    drop?.(NVD_DROPS.invalid);
    return [];
  }
  const out: NvdCvss[] = [];
  for (const m of list) {
    const metric = validMetric(m, version, drop);
    if (metric !== undefined) out.push(metric);
  }
  return out;
}

/** One metric, scored from its vector: the score published beside it is checked, never taken. */
function validMetric(m: unknown, version: NvdCvss["version"], drop?: (reason: string) => void): NvdCvss | undefined {
  const refuse = (reason: string): undefined => void drop?.(reason);
  if (!isObject(m) || !isObject(m.cvssData)) return refuse(NVD_DROPS.invalid);
  const d = m.cvssData;
  const type = m.type;
  if (d.version !== version || (type !== "Primary" && type !== "Secondary")) return refuse(NVD_DROPS.invalid);
  if (typeof d.baseSeverity !== "string" || !SEVERITIES.has(d.baseSeverity)) return refuse(NVD_DROPS.invalid);
  let stated: number;
  let source: string;
  try {
    stated = numberInRange(d.baseScore, "baseScore", 0, 10);
    source = boundedString(m.source, "source", 256);
  } catch {
    return refuse(NVD_DROPS.invalid);
  }
  const vectorString = typeof d.vectorString === "string" && d.vectorString.length <= 256 ? d.vectorString : "";
  const scored = version === "4.0" ? cvss40BaseScore(vectorString) : vectorString.startsWith(`CVSS:${version}/`) ? cvss31BaseScore(vectorString) : undefined;
  if (scored === undefined) return refuse(NVD_DROPS.vector);
  const metric: NvdCvss = {
    version,
    vector: version === "4.0" ? scored.vector : vectorString,
    baseScore: scored.score,
    severity: scored.severity,
    source,
    type,
  };
  // v4.0: a CNA's vector may carry threat or environmental metrics, and its stated score is then
  // that vector's (CVSS-BT/BE/BTE), not the CVSS-B score used here.
  const comparable = version === "4.0" ? (cvss40VectorScore(vectorString) ?? scored.score) : scored.score;
  // A severity outside its own score's band contradicts the vector as much as a wrong score does.
  if (!statedScoreAgrees(stated, comparable) || d.baseSeverity !== severityOf(stated)) {
    metric.rejected = { baseScore: stated, severity: d.baseSeverity };
    drop?.(NVD_DROPS.contradiction);
  }
  return metric;
}

/** Streams one API page (plain or gzipped); `meta()` has the page counters. A repeated CVE keeps the first. */
export function parseNvd(input: Readable): FeedStream<NvdRecord, NvdMeta> {
  const raw: Record<string, unknown> = {};
  const meta: NvdMeta = {};
  const syncMeta = (): void => {
    for (const k of ["resultsPerPage", "startIndex", "totalResults"] as const) {
      const v = raw[k];
      if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) meta[k] = v;
    }
    for (const k of ["format", "version", "timestamp"] as const) {
      const v = raw[k];
      if (typeof v === "string" && v.length <= 64) meta[k] = v;
    }
  };
  return feedStream(meta, async function* (counter) {
    const seen = new Set<string>();
    const drop = (reason: string): void => counter.drop(reason);
    for await (const frame of jsonFrames(decoded(input), { label: "nvd", field: "vulnerabilities", meta: raw })) {
      syncMeta();
      const item = fromFrame(frame, (j) => parseNvdRecord(j, drop), "nvd");
      if (item.ok && seen.has(item.record.cve)) {
        yield reject("duplicate id", "listed earlier in the page", item.record.cve, `nvd line ${frame.line}`);
        continue;
      }
      if (item.ok) seen.add(item.record.cve);
      yield item;
    }
    syncMeta();
  });
}
