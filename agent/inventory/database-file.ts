/**
 * One layer's copy of one package database file, parsed. Parsers keep what reads well and count
 * what does not (a garbled or cut stanza, a truncated file); a file that cannot be read at all
 * (not JSON, too large, a symlink, an I/O error) has nothing readable. Either way the file is
 * *unknown* for the packages it does not show, and `problem` says why.
 */
import { parseApkInstalled } from "./apk.js";
import { readCapped } from "./capped-read.js";
import type { DbKind } from "./database-search.js";
import { parseDpkgStatus, parseDpkgStatusD } from "./dpkg.js";
import type { InventoryCaps } from "./inventory-caps.js";
import { parsePackageJson } from "./npm.js";
import type { PackageRecord } from "./package-record.js";
import { parsePythonMetadata } from "./pypi.js";
import type { ScanBudget } from "./scan-budget.js";

export interface ParsedDb {
  /** By entry key (deb: name:arch; one-package files: ""). */
  entries: Map<string, PackageRecord>;
  /** Something in the file could not be read: packages it does not show may still have been there. */
  unknown: boolean;
}

/**
 * `abs` holds a database of `kind`; `entry` is what the layer has there (a symlink is not
 * followed). The bytes read are counted in the image's `budget`; once it is spent, nothing more is read.
 */
export async function readDatabase(
  abs: string,
  kind: DbKind,
  entry: "file" | "symlink",
  caps: InventoryCaps,
  budget: ScanBudget,
): Promise<{ db: ParsedDb; problem?: string }> {
  const unknown = (problem: string): { db: ParsedDb; problem: string } => ({ db: { entries: new Map(), unknown: true }, problem });
  if (entry === "symlink") return unknown("is a symlink: not followed");
  const many = kind === "dpkg-status" || kind === "apk";
  const head = kind === "pypi";
  if (!budget.mayRead()) return unknown(`not read: ${budget.spent}`);
  const raw = await readCapped(abs, many ? caps.maxDatabaseBytes : caps.maxManifestBytes, head);
  if (typeof raw === "string") return unknown(raw);
  budget.spendBytes(raw.length);
  const text = raw.toString("utf8");
  if (kind === "npm" || kind === "pypi") {
    const r = kind === "npm" ? parsePackageJson(text) : parsePythonMetadata(text);
    if (r.problem !== undefined) return unknown(r.problem);
    return { db: { entries: new Map(r.pkg !== undefined ? [["", r.pkg]] : []), unknown: false } };
  }
  const r = kind === "dpkg-status" ? parseDpkgStatus(text) : kind === "dpkg-status.d" ? parseDpkgStatusD(text) : parseApkInstalled(text);
  const entries = new Map<string, PackageRecord>();
  for (const e of r.entries) if (!entries.has(e.key)) entries.set(e.key, e.pkg);
  const db = { entries, unknown: r.unreadable > 0 };
  if (r.problems.length === 0) return { db };
  const more = r.problems.length > 3 ? `; and ${r.problems.length - 3} more` : "";
  const what = kind === "apk" ? "record(s)" : "stanza(s)";
  return { db, problem: `${r.unreadable} unreadable ${what} or cut-off end: ${r.problems.slice(0, 3).join("; ")}${more}` };
}
