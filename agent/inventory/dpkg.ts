/**
 * dpkg's database of installed packages: `var/lib/dpkg/status` (every package in one file, each a
 * deb822 stanza) and distroless's `var/lib/dpkg/status.d/<package>` (one stanza file per package).
 * A stanza that cannot be read is dropped and counted, the rest are kept, so one garbled stanza
 * does not hide a whole image's packages.
 */
import type { DatabaseParse, DbEntry } from "./package-record.js";

interface Stanza {
  /** Field names lower-cased (deb822 names are case-insensitive); continuation lines joined by "\n". */
  fields: Map<string, string>;
  line: number;
  /** Why the stanza cannot be trusted, if it cannot. */
  broken?: string;
}

const FIELD = /^([A-Za-z0-9][^\s:]*):(.*)$/;
const WANT = new Set(["unknown", "install", "hold", "deinstall", "purge"]);
const FLAG = new Set(["ok", "reinstreq"]);
const STATE = new Set(["not-installed", "config-files", "half-installed", "unpacked", "half-configured", "triggers-awaited", "triggers-pending", "installed"]);
const NAME = /^[A-Za-z0-9][A-Za-z0-9+._-]*$/;
const VERSION = /^(?:\d+:)?[A-Za-z0-9][A-Za-z0-9.+~:_-]*$/;

/** Splits deb822 text into stanzas; a stanza holding a line that is neither a field nor a continuation is marked broken. */
export function deb822Stanzas(text: string): Stanza[] {
  const out: Stanza[] = [];
  let cur: Stanza | undefined;
  let last: string | undefined;
  const lines = text.split("\n");
  // A final "" after the last "\n" is not a line.
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  lines.forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (/^[ \t]*$/.test(line)) {
      if (cur !== undefined) out.push(cur);
      cur = undefined;
      last = undefined;
      return;
    }
    cur ??= { fields: new Map(), line: i + 1 };
    if (cur.broken !== undefined) return;
    if (line.includes("\0")) {
      cur.broken = `line ${i + 1}: binary data (NUL byte)`;
      return;
    }
    if (line.startsWith(" ") || line.startsWith("\t")) {
      if (last === undefined) cur.broken = `line ${i + 1}: continuation line outside a field`;
      else cur.fields.set(last, `${cur.fields.get(last) ?? ""}\n${line.slice(1)}`);
      return;
    }
    const m = FIELD.exec(line);
    if (m === null) {
      cur.broken = `line ${i + 1}: neither a field nor a continuation line: ${JSON.stringify(line.slice(0, 40))}`;
      return;
    }
    const key = (m[1] ?? "").toLowerCase();
    if (cur.fields.has(key)) {
      cur.broken = `line ${i + 1}: field ${m[1] ?? ""} repeated`;
      return;
    }
    cur.fields.set(key, (m[2] ?? "").trim());
    last = key;
  });
  if (cur !== undefined) out.push(cur);
  return out;
}

/** "glibc (2.36-9+deb12u4)" -> ["glibc", "2.36-9+deb12u4"]; "glibc" -> ["glibc", undefined]. */
export function parseSourceField(value: string): [string, string | undefined] | undefined {
  const m = /^(\S+)(?:\s+\(\s*(\S+)\s*\))?$/.exec(value.trim());
  if (m === null) return undefined;
  return [m[1] ?? "", m[2]];
}

function entryOf(s: Stanza, requireStatus: boolean): DbEntry | string | undefined {
  const f = s.fields;
  const name = f.get("package");
  if (name === undefined) return `stanza at line ${s.line}: no Package field`;
  const status = f.get("status");
  if (status === undefined) {
    if (requireStatus) return `stanza at line ${s.line} (${name}): no Status field`;
  } else {
    const words = status.split(/\s+/);
    if (words.length !== 3 || !WANT.has(words[0] ?? "") || !FLAG.has(words[1] ?? "") || !STATE.has(words[2] ?? "")) {
      return `stanza at line ${s.line} (${name}): bad Status ${JSON.stringify(status.slice(0, 40))}`;
    }
    if (words[2] !== "installed") return undefined;
  }
  const version = f.get("version");
  if (version === undefined) return `stanza at line ${s.line} (${name}): no Version field`;
  if (!NAME.test(name) || name.includes("\uFFFD")) return `stanza at line ${s.line}: bad package name ${JSON.stringify(name.slice(0, 40))}`;
  if (!VERSION.test(version)) return `stanza at line ${s.line} (${name}): bad version ${JSON.stringify(version.slice(0, 40))}`;
  // Policy: no Source field means the source package has the binary's name (and version).
  let sourceName = name;
  let sourceVersion = version;
  const src = f.get("source");
  if (src !== undefined) {
    const parsed = parseSourceField(src);
    if (parsed === undefined || !NAME.test(parsed[0]) || (parsed[1] !== undefined && !VERSION.test(parsed[1]))) {
      return `stanza at line ${s.line} (${name}): bad Source ${JSON.stringify(src.slice(0, 40))}`;
    }
    sourceName = parsed[0];
    sourceVersion = parsed[1] ?? version;
  }
  // Multi-Arch: same packages may be installed once per architecture.
  const arch = f.get("architecture") ?? "";
  return { key: `${name}:${arch}`, pkg: { type: "deb", name, version, sourceName, sourceVersion } };
}

function parse(text: string, requireStatus: boolean): DatabaseParse {
  const entries: DbEntry[] = [];
  const problems: string[] = [];
  let unreadable = 0;
  const stanzas = deb822Stanzas(text);
  for (const s of stanzas) {
    const e = s.broken ?? entryOf(s, requireStatus);
    if (typeof e === "string") {
      problems.push(e);
      unreadable++;
    } else if (e !== undefined) {
      entries.push(e);
    }
  }
  // dpkg ends every file it writes with a newline: without one the file was cut short, and
  // whatever followed is unknown (the last stanza itself is kept if it reads well).
  if (text.length > 0 && !text.endsWith("\n")) {
    problems.push("no newline at the end: the file is truncated");
    unreadable++;
  }
  return { entries, problems, unreadable };
}

/** `var/lib/dpkg/status`: only stanzas whose Status ends in "installed"; Status is required. */
export function parseDpkgStatus(text: string): DatabaseParse {
  return parse(text, true);
}

/** A `var/lib/dpkg/status.d/*` file (distroless): Status is optional; when present it must say installed. */
export function parseDpkgStatusD(text: string): DatabaseParse {
  return parse(text, false);
}
