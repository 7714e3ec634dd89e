/**
 * Zip archives for the reader's tests, written by yazl (an independent, widely used writer) so
 * that the reader is checked against someone else's reading of the format, zip64 included.
 * Hostile archives are yazl's output with bytes patched, located here too.
 */
import { Readable } from "node:stream";
import { ZipFile } from "yazl";

export interface ArchiveEntry {
  name: string;
  data: Buffer;
  /** Deflate (the default) or store. */
  compress?: boolean;
  /** Write from a stream of unknown size: yazl then sets bit 3 and puts a data descriptor after the data. */
  stream?: boolean;
  zip64?: boolean;
  comment?: string;
}

export async function yazlArchive(entries: readonly (ArchiveEntry | { directory: string })[], opts: { zip64?: boolean; comment?: string } = {}): Promise<Buffer> {
  const zip = new ZipFile();
  const mtime = new Date("2025-08-25T12:00:00Z");
  for (const e of entries) {
    if ("directory" in e) {
      zip.addEmptyDirectory(e.directory, { mtime });
      continue;
    }
    const options = { mtime, compress: e.compress ?? true, forceZip64Format: e.zip64 ?? opts.zip64 ?? false, ...(e.comment === undefined ? {} : { fileComment: e.comment }) };
    if (e.stream === true) zip.addReadStream(Readable.from([e.data]), e.name, options);
    else zip.addBuffer(e.data, e.name, options);
  }
  zip.end({ forceZip64Format: opts.zip64 ?? false, comment: opts.comment ?? "" });
  const parts: Buffer[] = [];
  for await (const chunk of zip.outputStream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Where the central directory record of `name` starts (the name's last occurrence, 46 bytes on). */
export function centralRecord(zip: Buffer, name: string): number {
  const at = zip.lastIndexOf(Buffer.from(name)) - 46;
  if (at < 0 || zip.readUInt32LE(at) !== 0x02014b50) throw new Error(`no central directory record for ${name}`);
  return at;
}

/** Where the local header of `name` starts (the name's first occurrence, 30 bytes on). */
export function localHeader(zip: Buffer, name: string): number {
  const at = zip.indexOf(Buffer.from(name)) - 30;
  if (at < 0 || zip.readUInt32LE(at) !== 0x04034b50) throw new Error(`no local header for ${name}`);
  return at;
}

/** Where the end of central directory record starts (no archive comment assumed). */
export function endRecord(zip: Buffer): number {
  const at = zip.length - 22;
  if (zip.readUInt32LE(at) !== 0x06054b50) throw new Error("no end record at the end");
  return at;
}

/** Replaces every occurrence of `from` by `to` (same length), as a copy. */
export function replaced(zip: Buffer, from: string, to: string): Buffer {
  const [a, b] = [Buffer.from(from, "latin1"), Buffer.from(to, "latin1")];
  if (a.length !== b.length) throw new Error("a patch keeps the length");
  const out = Buffer.from(zip);
  for (let i = out.indexOf(a); i !== -1; i = out.indexOf(a, i + 1)) b.copy(out, i);
  return out;
}
