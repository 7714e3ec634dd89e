/**
 * apk's database of installed packages, `lib/apk/db/installed`: blank-line separated records of
 * one-letter fields (`P:` name, `V:` version, `o:` origin, i.e. the source package). A record
 * that cannot be read is dropped and counted; the others are kept.
 */
import type { DatabaseParse, DbEntry } from "./package-record.js";

const LINE = /^([A-Za-z]):(.*)$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9+._-]*$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9.+~_-]*$/;

export function parseApkInstalled(text: string): DatabaseParse {
  const entries: DbEntry[] = [];
  const problems: string[] = [];
  let unreadable = 0;
  let rec: { line: number; fields: Map<string, string>; broken?: string } | undefined;
  const finish = (): void => {
    if (rec === undefined) return;
    const r = rec;
    rec = undefined;
    const name = r.fields.get("P");
    const version = r.fields.get("V");
    let bad = r.broken;
    if (bad === undefined && (name === undefined || version === undefined)) bad = `record at line ${r.line}: no ${name === undefined ? "P:" : "V:"} line`;
    if (bad === undefined && !NAME.test(name ?? "")) bad = `record at line ${r.line}: bad name ${JSON.stringify((name ?? "").slice(0, 40))}`;
    if (bad === undefined && !VERSION.test(version ?? "")) bad = `record at line ${r.line} (${name ?? ""}): bad version ${JSON.stringify((version ?? "").slice(0, 40))}`;
    if (bad !== undefined || name === undefined || version === undefined) {
      problems.push(bad ?? `record at line ${r.line}: unreadable`);
      unreadable++;
      return;
    }
    const origin = r.fields.get("o");
    entries.push({
      key: name,
      pkg: { type: "apk", name, version, ...(origin !== undefined && origin !== "" ? { sourceName: origin } : {}) },
    });
  };
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  lines.forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") {
      finish();
      return;
    }
    rec ??= { line: i + 1, fields: new Map() };
    if (rec.broken !== undefined) return;
    if (line.includes("\0")) {
      rec.broken = `line ${i + 1}: binary data (NUL byte)`;
      return;
    }
    const m = LINE.exec(line);
    if (m === null) {
      rec.broken = `line ${i + 1}: not a "X:value" line: ${JSON.stringify(line.slice(0, 40))}`;
      return;
    }
    const key = m[1] ?? "";
    // Per-file lines (F:, R:, Z:, a:, M:) repeat; the package-level ones come first, once.
    if (!rec.fields.has(key)) rec.fields.set(key, m[2] ?? "");
  });
  finish();
  if (text.length > 0 && !text.endsWith("\n")) {
    problems.push("no newline at the end: the file is truncated");
    unreadable++;
  }
  return { entries, problems, unreadable };
}
