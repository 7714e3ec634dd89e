/** NVD CVE API 2.0 pages (https://nvd.nist.gov/developers/vulnerabilities): the CVSS v3 and v4.0 scores of each CVE. */
import type { Readable } from "node:stream";
import { cvss40BaseScore } from "../../vulns/cvss.js";
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
  /** v3: as published. v4.0: the base vector (NVD writes every metric, the undefined ones as X). */
  vector: string;
  /** v3: as published. v4.0: the vector's CVSS-B score, by the calculator (cvss.ts). */
  baseScore: number;
  severity: string;
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
const VECTOR = /^CVSS:(?:3\.[01]|4\.0)\/[A-Za-z]+:[A-Za-z]+(?:\/[A-Za-z]+:[A-Za-z]+)*$/;

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
    if (metrics !== undefined && !isObject(metrics)) drop?.("invalid metric");
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
    drop?.("invalid metric");
    return [];
  }
  const out: NvdCvss[] = [];
  for (const m of list) {
    const metric = validMetric(m, version);
    if (metric === undefined) drop?.("invalid metric");
    else out.push(metric);
  }
  return out;
}

function validMetric(m: unknown, version: NvdCvss["version"]): NvdCvss | undefined {
  if (!isObject(m) || !isObject(m.cvssData)) return undefined;
  const d = m.cvssData;
  if (d.version !== version || (m.type !== "Primary" && m.type !== "Secondary")) return undefined;
  if (typeof d.vectorString !== "string" || d.vectorString.length > 256 || !VECTOR.test(d.vectorString)) return undefined;
  if (!d.vectorString.startsWith(`CVSS:${version}/`)) return undefined;
  if (typeof d.baseSeverity !== "string" || !SEVERITIES.has(d.baseSeverity)) return undefined;
  try {
    let baseScore = numberInRange(d.baseScore, "baseScore", 0, 10);
    let severity = d.baseSeverity;
    let vector = d.vectorString;
    if (version === "4.0") {
      // The vector is what the scorer asserts; its score is computed, not taken on trust.
      const scored = cvss40BaseScore(d.vectorString);
      if (scored === undefined) return undefined;
      ({ score: baseScore, severity, vector } = scored);
    }
    return {
      version,
      vector,
      baseScore,
      severity,
      source: boundedString(m.source, "source", 256),
      type: m.type,
    };
  } catch {
    return undefined;
  }
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
