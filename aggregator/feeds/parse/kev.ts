/**
 * The CISA Known Exploited Vulnerabilities catalog
 * (https://www.cisa.gov/known-exploited-vulnerabilities-catalog, schema in cisagov/kev-data).
 */
import type { Readable } from "node:stream";
import {
  type FeedItem,
  type FeedStream,
  RecordError,
  cveId,
  dateField,
  isObject,
  objectOf,
  parseDate,
  reject,
  stringField,
  validated,
  feedStream,
} from "./types.js";
import { fromFrame } from "../decode/frame-item.js";
import { decoded } from "../decode/gzip-sniff.js";
import { jsonFrames } from "../decode/json-framer.js";

export interface KevRecord {
  cveID: string;
  /** YYYY-MM-DD */
  dateAdded: string;
  /** The catalog's "Known" (true) or "Unknown" (false). */
  knownRansomwareCampaignUse: boolean;
  vendorProject: string;
  product: string;
  dueDate?: string;
}

export interface KevMeta {
  title?: string;
  catalogVersion?: string;
  dateReleased?: string;
  /** The count the catalog claims; compare with the records read. */
  count?: number;
}

export function parseKevRecord(json: unknown): FeedItem<KevRecord> {
  return validated(json, (j) => (isObject(j) && typeof j.cveID === "string" ? j.cveID.slice(0, 64) : undefined), (j) => {
    const o = objectOf(j, "entry");
    const ransomware = stringField(o, "knownRansomwareCampaignUse", { required: true, max: 32 }).toLowerCase();
    if (ransomware !== "known" && ransomware !== "unknown") {
      throw new RecordError("invalid field", `knownRansomwareCampaignUse ${JSON.stringify(ransomware)} is neither Known nor Unknown`);
    }
    const record: KevRecord = {
      cveID: cveId(o.cveID, "cveID"),
      dateAdded: dateField(o, "dateAdded", { required: true }),
      knownRansomwareCampaignUse: ransomware === "known",
      vendorProject: stringField(o, "vendorProject", { required: true }),
      product: stringField(o, "product", { required: true }),
    };
    const due = dateField(o, "dueDate");
    if (due !== undefined) record.dueDate = due;
    return record;
  });
}

/**
 * Streams `vulnerabilities` of the catalog (plain or gzipped). The header fields come before the
 * array in CISA's file, so `meta()` is complete by the first record; a repeated CVE is rejected
 * ("duplicate id", the first one stands).
 */
export function parseKev(input: Readable): FeedStream<KevRecord, KevMeta> {
  const raw: Record<string, unknown> = {};
  const meta: KevMeta = {};
  const syncMeta = (): void => {
    if (typeof raw.title === "string") meta.title = raw.title.slice(0, 1024);
    if (typeof raw.catalogVersion === "string") meta.catalogVersion = raw.catalogVersion.slice(0, 64);
    if (typeof raw.dateReleased === "string" && !Number.isNaN(parseDate(raw.dateReleased))) meta.dateReleased = raw.dateReleased;
    if (Number.isSafeInteger(raw.count)) meta.count = raw.count as number;
  };
  return feedStream(meta, async function* () {
    const seen = new Set<string>();
    for await (const frame of jsonFrames(decoded(input), { label: "kev", field: "vulnerabilities", meta: raw })) {
      syncMeta();
      const item = fromFrame(frame, parseKevRecord, "kev");
      if (item.ok && seen.has(item.record.cveID)) {
        yield reject("duplicate id", "listed earlier in the catalog", item.record.cveID, `kev line ${frame.line}`);
        continue;
      }
      if (item.ok) seen.add(item.record.cveID);
      yield item;
    }
    syncMeta();
  });
}
