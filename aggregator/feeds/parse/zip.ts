/**
 * Byte-level decoding of feed inputs, below the record parsers: transparent gunzip, zip archive
 * entries, and the framing of text into records (JSON array elements, lines). Nothing here holds
 * more than one record's bytes at a time.
 */
import { createWriteStream } from "node:fs";
import { type FileHandle, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { type FeedItem, FeedFormatError, MAX_RECORD_BYTES, reject } from "./types.js";

// ---- gzip ----

/**
 * The bytes of `input`, gunzipped if they start with the gzip magic (1f 8b): feeds come both ways
 * (EPSS is published as .csv.gz, a mirror may serve any of them compressed). Breaking out of the
 * iteration destroys `input`.
 */
export async function* decoded(input: AsyncIterable<unknown>): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  try {
    let head: Buffer = Buffer.alloc(0);
    let ended = false;
    while (head.length < 2) {
      const r = await it.next();
      if (r.done === true) {
        ended = true;
        break;
      }
      head = head.length === 0 ? toBuffer(r.value) : Buffer.concat([head, toBuffer(r.value)]);
    }
    if (head.length < 2 || head[0] !== 0x1f || head[1] !== 0x8b) {
      if (head.length > 0) yield head;
      if (!ended) for (let r = await it.next(); r.done !== true; r = await it.next()) yield toBuffer(r.value);
      return;
    }
    const gunzip = zlib.createGunzip();
    const done = pipeline(Readable.from(prefixed(head, it, ended)), gunzip);
    let out = 0;
    try {
      for await (const chunk of gunzip) {
        out += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
      await done;
    } catch (err: unknown) {
      const code = typeof err === "object" && err !== null && "code" in err ? String(err.code) : "";
      if (!code.startsWith("Z_")) throw err;
      const reason = code === "Z_BUF_ERROR" ? "truncated" : "invalid gzip";
      throw new FeedFormatError(reason, `gzip stream ${reason} after ${out} decompressed bytes: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      gunzip.destroy();
      done.catch(() => undefined);
    }
  } finally {
    await it.return?.();
  }
}

async function* prefixed(head: Buffer, it: AsyncIterator<unknown>, ended: boolean): AsyncGenerator<Buffer> {
  yield head;
  if (!ended) for (let r = await it.next(); r.done !== true; r = await it.next()) yield toBuffer(r.value);
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === "string") return Buffer.from(chunk, "utf8");
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new FeedFormatError("invalid input", `feed input yielded ${typeof chunk}, not bytes`);
}

// ---- zip ----

export type ZipEntry =
  | { name: string; ok: true; data: Buffer }
  | { name: string; ok: false; reason: string; detail: string }
  | { name: string; ok: "skipped" };

/** True for entry names that would land outside an extraction directory (absolute, drive, `..`, NUL). */
export function isUnsafeEntryName(name: string): boolean {
  return /^[\\/]/.test(name) || /^[a-zA-Z]:/.test(name) || name.includes("\0") || name.split(/[\\/]/).includes("..");
}

/**
 * Entries of a zip file, one at a time and only in memory (nothing is ever extracted to disk).
 * Directories are passed over; names that escape the archive are rejected ("path traversal"); so
 * are entries over `maxEntryBytes` uncompressed ("too large": judged by the header first, then by
 * inflating with a cap, since a header can lie). Entries `wanted` refuses come back as skipped,
 * unread. A broken central directory fails the whole archive.
 *
 * The central directory is read once (zip64 aware) and the entries' data through a window of
 * 1 MiB blocks, so an osv.dev archive's small entries cost a synchronous inflate each, not a
 * round of file reads: a general-purpose zip library managed 1,600 entries/s here.
 */
export async function* zipEntries(
  path: string,
  wanted: (name: string) => boolean,
  maxEntryBytes = MAX_RECORD_BYTES,
): AsyncGenerator<ZipEntry> {
  const file = await open(path);
  try {
    const win = new Window(file, (await file.stat()).size);
    let cd: { offset: number; size: number; count: number };
    try {
      cd = await centralDirectory(win);
    } catch (err: unknown) {
      throw new FeedFormatError("invalid zip", `${path} is not a readable zip archive: ${(err as Error).message}`, { cause: err });
    }
    if (cd.size > MAX_CENTRAL_DIRECTORY) throw new FeedFormatError("too large", `${path}: a central directory of ${cd.size} bytes`);
    const dir = Buffer.from(await win.bytes(cd.offset, cd.size));
    let p = 0;
    for (let i = 0; i < cd.count; i++) {
      if (p + 46 > dir.length || dir.readUInt32LE(p) !== 0x02014b50) {
        throw new FeedFormatError("invalid zip", `${path}: broken central directory at entry ${i} (byte ${cd.offset + p})`);
      }
      const e: CdEntry = {
        name: "",
        flags: dir.readUInt16LE(p + 8),
        method: dir.readUInt16LE(p + 10),
        crc: dir.readUInt32LE(p + 16),
        comp: dir.readUInt32LE(p + 20),
        uncomp: dir.readUInt32LE(p + 24),
        local: dir.readUInt32LE(p + 42),
      };
      const nameLen = dir.readUInt16LE(p + 28);
      const extraLen = dir.readUInt16LE(p + 30);
      const commentLen = dir.readUInt16LE(p + 32);
      const nameB = dir.subarray(p + 46, p + 46 + nameLen);
      if (e.comp === 0xffffffff || e.uncomp === 0xffffffff || e.local === 0xffffffff) zip64Extra(e, dir.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen));
      p += 46 + nameLen + extraLen + commentLen;
      // Bit 11: UTF-8 names; otherwise CP437, of which ASCII (all real names) is the same.
      e.name = nameB.toString(e.flags & 0x800 ? "utf8" : "latin1");
      if (isUnsafeEntryName(e.name)) {
        yield { name: e.name, ok: false, reason: "path traversal", detail: `entry name ${JSON.stringify(e.name)} escapes the archive` };
        continue;
      }
      if (e.name.endsWith("/")) continue;
      if (!wanted(e.name)) {
        yield { name: e.name, ok: "skipped" };
        continue;
      }
      yield await readEntry(win, e, maxEntryBytes);
    }
  } finally {
    await file.close().catch(() => undefined);
  }
}

const MAX_CENTRAL_DIRECTORY = 512 * 1024 * 1024;

interface CdEntry {
  name: string;
  flags: number;
  method: number;
  crc: number;
  comp: number;
  uncomp: number;
  local: number;
}

/** Fills in the 64-bit sizes and offset an entry keeps in its zip64 extra field (id 0x0001). */
function zip64Extra(e: CdEntry, extra: Buffer): void {
  for (let q = 0; q + 4 <= extra.length; ) {
    const id = extra.readUInt16LE(q);
    const len = extra.readUInt16LE(q + 2);
    if (id === 0x0001) {
      let r = q + 4;
      const next = (): number => {
        if (r + 8 > q + 4 + len) throw new FeedFormatError("invalid zip", `zip64 extra field of ${e.name || "an entry"} is short`);
        const v = Number(extra.readBigUInt64LE(r));
        r += 8;
        return v;
      };
      if (e.uncomp === 0xffffffff) e.uncomp = next();
      if (e.comp === 0xffffffff) e.comp = next();
      if (e.local === 0xffffffff) e.local = next();
      return;
    }
    q += 4 + len;
  }
}

/** Where the central directory is: from the end record, or the zip64 one it points to. */
async function centralDirectory(win: Window): Promise<{ offset: number; size: number; count: number }> {
  const tailLen = Math.min(win.size, 22 + 0xffff);
  const tail = Buffer.from(await win.bytes(win.size - tailLen, tailLen));
  let at = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      at = i;
      break;
    }
  }
  if (at < 0) throw new Error("no end of central directory record");
  let count = tail.readUInt16LE(at + 10);
  let size = tail.readUInt32LE(at + 12);
  let offset = tail.readUInt32LE(at + 16);
  if (count === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
    const loc = at - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) throw new Error("zip64 end of central directory locator missing");
    const z = Buffer.from(await win.bytes(Number(tail.readBigUInt64LE(loc + 8)), 56));
    if (z.readUInt32LE(0) !== 0x06064b50) throw new Error("zip64 end of central directory record missing");
    count = Number(z.readBigUInt64LE(32));
    size = Number(z.readBigUInt64LE(40));
    offset = Number(z.readBigUInt64LE(48));
  }
  if (offset + size > win.size) throw new Error(`central directory (${size} bytes at ${offset}) runs past the end of the file`);
  return { offset, size, count };
}

/**
 * One entry's bytes, inflated synchronously: entries are small, and a zlib stream per entry costs
 * a thread-pool trip per chunk. The inflated size must match the header and the CRC the data.
 */
async function readEntry(win: Window, e: CdEntry, max: number): Promise<ZipEntry> {
  const name = e.name;
  const fail = (reason: string, detail: string): ZipEntry => ({ name, ok: false, reason, detail });
  if (e.uncomp > max) return fail("too large", `${e.uncomp} bytes uncompressed (limit ${max})`);
  if ((e.flags & 0x1) !== 0 || (e.method !== 0 && e.method !== 8)) return fail("invalid zip entry", `encrypted, or compression method ${e.method}`);
  // Deflate never grows data by more than a few bytes per 16 KiB block.
  if (e.comp > max + max / 256 + 1024) return fail("too large", `${e.comp} bytes compressed`);
  let data: Buffer;
  try {
    // Read ahead over the local header's name and extra and the data, usually in one go.
    const head = win.sync(e.local, 30) ?? (await win.bytes(e.local, Math.min(30 + 1024 + e.comp, win.size - e.local))).subarray(0, 30);
    if (head.readUInt32LE(0) !== 0x04034b50) return fail("invalid zip entry", `no local header at byte ${e.local}`);
    const start = e.local + 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
    const raw = win.sync(start, e.comp) ?? (await win.bytes(start, e.comp));
    data = e.method === 8 ? zlib.inflateRawSync(raw, { maxOutputLength: max }) : Buffer.from(raw);
  } catch (err: unknown) {
    if (err instanceof RangeError) return fail("too large", `inflates past ${max} bytes`);
    return fail("invalid zip entry", (err as Error).message);
  }
  if (data.length !== e.uncomp) return fail("invalid zip entry", `${data.length} bytes, the header says ${e.uncomp}`);
  // zlib.crc32 arrived in Node 20.15.
  if (typeof zlib.crc32 === "function" && zlib.crc32(data) >>> 0 !== e.crc >>> 0) return fail("invalid zip entry", "CRC mismatch");
  return { name, ok: true, data };
}

const BLOCK = 1024 * 1024;

/** A read window over a file: ranges inside it are served synchronously, others read anew. */
class Window {
  private buf: Buffer = Buffer.alloc(0);
  private start = 0;

  constructor(
    private readonly file: FileHandle,
    readonly size: number,
  ) {}

  /** The bytes if the window holds them (a view: copy to keep). */
  sync(pos: number, len: number): Buffer | undefined {
    if (pos >= this.start && pos + len <= this.start + this.buf.length) return this.buf.subarray(pos - this.start, pos - this.start + len);
    return undefined;
  }

  /** Moves the window to start at `pos` (at least `len` bytes, a block at least) and returns them. */
  async bytes(pos: number, len: number): Promise<Buffer> {
    const hit = this.sync(pos, len);
    if (hit !== undefined) return hit;
    if (pos < 0 || pos + len > this.size) throw new Error(`bytes ${pos}-${pos + len} are outside the ${this.size}-byte file`);
    const want = Math.min(Math.max(len, BLOCK), this.size - pos);
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.file.read(buf, got, want - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < len) throw new Error(`unexpected end of file at byte ${pos + got}`);
    this.buf = buf.subarray(0, got);
    this.start = pos;
    return this.buf.subarray(0, len);
  }
}

/**
 * Writes a stream to a private temporary file, for formats that need random access (zip keeps its
 * directory at the end). The caller must call `remove()`.
 */
export async function spool(bytes: AsyncIterable<Buffer>, prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const remove = () => rm(dir, { recursive: true, force: true });
  const path = join(dir, "spool");
  try {
    await pipeline(Readable.from(bytes), createWriteStream(path, { mode: 0o600 }));
  } catch (err: unknown) {
    await remove();
    throw err;
  }
  return { path, remove };
}

// ---- lines ----

/** One line without its terminator (LF or CRLF); `text` is null when the line was over the limit. */
export interface Line {
  line: number;
  text: string | null;
}

export async function* lines(bytes: AsyncIterable<Buffer>, maxBytes: number): AsyncGenerator<Line> {
  let parts: Buffer[] = [];
  let size = 0;
  let over = false;
  let line = 0;
  const finish = (): Line => {
    line++;
    let text: string | null = null;
    if (!over) {
      const buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      text = buf.toString("utf8", 0, buf.length > 0 && buf[buf.length - 1] === 0x0d ? buf.length - 1 : buf.length);
    }
    parts = [];
    size = 0;
    over = false;
    return { line, text };
  };
  const add = (b: Buffer): void => {
    size += b.length;
    if (size > maxBytes) {
      over = true;
      parts = [];
    } else if (!over) parts.push(b);
  };
  for await (const chunk of bytes) {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      add(chunk.subarray(from, nl));
      yield finish();
      from = nl + 1;
    }
    if (from < chunk.length) add(chunk.subarray(from));
  }
  if (size > 0) yield finish();
}

// ---- JSON ----

/** One framed JSON value; `line` (1-based) and `byte` (0-based) say where it starts in the (decompressed) text. */
export type JsonFrame =
  | { ok: true; value: unknown; line: number; byte: number }
  | { ok: false; reason: "invalid json" | "too large"; detail: string; line: number; byte: number };

export interface JsonFrameOptions {
  /** Name for error messages ("kev", a file or zip entry). */
  label: string;
  /**
   * Stream the elements of the array under this key of a top-level object, and put the other
   * top-level fields into `meta` (values over 64 KiB are skipped). Without it the input is a
   * top-level array, or a sequence of values (one document, concatenated or JSON lines).
   */
  field?: string;
  meta?: Record<string, unknown>;
  maxValueBytes?: number;
}

/**
 * Frames a JSON text into its records without building the whole document: a byte scanner finds
 * where each element starts and ends (only the structure outside elements is checked here), and
 * JSON.parse checks each element. A bad element is one bad frame; a bad structure (not JSON,
 * truncated, a missing bracket) ends the iteration with a FeedFormatError that gives line and byte.
 */
export async function* jsonFrames(bytes: AsyncIterable<Buffer>, opts: JsonFrameOptions): AsyncGenerator<JsonFrame> {
  const framer = new JsonFramer(opts);
  for await (const chunk of bytes) {
    yield* framer.push(chunk);
    framer.check();
  }
  yield* framer.end();
  framer.check();
}

const WS = new Uint8Array(256);
WS[0x20] = WS[0x09] = WS[0x0a] = WS[0x0d] = 1;
const VALUE_START = new Uint8Array(256);
for (const c of '{["-0123456789tfn') VALUE_START[c.charCodeAt(0)] = 1;
const [QUOTE, BACKSLASH, LBRACE, RBRACE, LBRACKET, RBRACKET, COMMA, COLON, NL] = [0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x0a];

// Where the scanner is, outside of a value.
const TOP = 0, SEQ = 1, KEY_OR_END = 2, KEY = 3, COLON_ = 4, VALUE = 5, OBJ_NEXT = 6, ELEM_OR_END = 7, ELEM = 8, ARR_NEXT = 9, DONE = 10;
// What kind of value is being captured.
const NONE = 0, CONTAINER = 1, STRING = 2, PRIMITIVE = 3;
// What the captured value is for.
const AS_KEY = 0, AS_META = 1, AS_ELEMENT = 2;
const MAX_META_BYTES = 64 * 1024;

class JsonFramer {
  readonly #opts: JsonFrameOptions;
  readonly #max: number;
  #state = TOP;
  #topArray = false;
  #sawField = false;
  #key = "";
  #error: FeedFormatError | undefined;
  // the value being captured
  #cap = NONE;
  #role = AS_ELEMENT;
  #depth = 0;
  #inString = false;
  #escape = false;
  #parts: Buffer[] = [];
  #size = 0;
  #limit = 0;
  #startByte = 0;
  #startLine = 0;
  /** Bytes before the current chunk. */
  #base = 0;
  /**
   * Newlines before the scan position. Raw newlines inside strings are not counted (strings are
   * skipped with indexOf, and JSON forbids them there anyway), so after such an invalid value the
   * line numbers in messages run short; byte offsets are always exact.
   */
  #newlines = 0;
  #out: JsonFrame[] = [];

  constructor(opts: JsonFrameOptions) {
    this.#opts = opts;
    this.#max = opts.maxValueBytes ?? MAX_RECORD_BYTES;
  }

  push(buf: Buffer): JsonFrame[] {
    this.#out = [];
    if (this.#error !== undefined) return this.#out;
    let i = 0;
    if (this.#base === 0 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) i = 3;
    try {
      const n = buf.length;
      while (i < n) {
        if (this.#cap !== NONE) {
          i = this.#capture(buf, i);
          continue;
        }
        const c = buf[i]!;
        if (WS[c] === 1) {
          if (c === NL) this.#newlines++;
          i++;
        } else i = this.#structure(c, i);
      }
    } catch (err: unknown) {
      if (!(err instanceof FeedFormatError)) throw err;
      this.#error = err;
      return this.#out;
    }
    this.#base += buf.length;
    return this.#out;
  }

  end(): JsonFrame[] {
    this.#out = [];
    if (this.#error !== undefined) return this.#out;
    try {
      if (this.#cap === PRIMITIVE && this.#state === SEQ) this.#finish();
      if (this.#cap !== NONE) {
        this.#fail("truncated", `value opened at line ${this.#startLine}, byte ${this.#startByte} is not closed`, 0);
      }
      if (this.#state === TOP) this.#fail("invalid json", "input is empty", 0);
      if (this.#state !== DONE && this.#state !== SEQ) this.#fail("truncated", "document is not closed", 0);
      if (this.#opts.field !== undefined && !this.#sawField) {
        this.#fail("invalid json", `no "${this.#opts.field}" array`, 0);
      }
    } catch (err: unknown) {
      if (!(err instanceof FeedFormatError)) throw err;
      this.#error = err;
    }
    return this.#out;
  }

  /** Throws the structural error, if any, after the frames before it were handed out. */
  check(): void {
    if (this.#error !== undefined) throw this.#error;
  }

  #structure(c: number, i: number): number {
    switch (this.#state) {
      case TOP:
        if (this.#opts.field !== undefined) {
          if (c !== LBRACE) this.#fail("invalid json", `expected '{'`, i);
          this.#state = KEY_OR_END;
          return i + 1;
        }
        if (c === LBRACKET) {
          this.#topArray = true;
          this.#state = ELEM_OR_END;
          return i + 1;
        }
        this.#state = SEQ;
        return this.#startValue(c, i, AS_ELEMENT);
      case SEQ:
        return this.#startValue(c, i, AS_ELEMENT);
      case KEY_OR_END:
      case KEY:
        if (c === RBRACE && this.#state === KEY_OR_END) {
          this.#state = DONE;
          return i + 1;
        }
        if (c !== QUOTE) this.#fail("invalid json", "expected a key", i);
        return this.#startValue(c, i, AS_KEY);
      case COLON_:
        if (c !== COLON) this.#fail("invalid json", "expected ':'", i);
        this.#state = VALUE;
        return i + 1;
      case VALUE:
        if (this.#key === this.#opts.field) {
          if (c !== LBRACKET) this.#fail("invalid json", `"${this.#key}" is not an array`, i);
          this.#sawField = true;
          this.#state = ELEM_OR_END;
          return i + 1;
        }
        return this.#startValue(c, i, AS_META);
      case OBJ_NEXT:
        if (c === COMMA) this.#state = KEY;
        else if (c === RBRACE) this.#state = DONE;
        else this.#fail("invalid json", "expected ',' or '}'", i);
        return i + 1;
      case ELEM_OR_END:
      case ELEM:
        if (c === RBRACKET && this.#state === ELEM_OR_END) return this.#afterArray(i);
        return this.#startValue(c, i, AS_ELEMENT);
      case ARR_NEXT:
        if (c === COMMA) {
          this.#state = ELEM;
          return i + 1;
        }
        if (c === RBRACKET) return this.#afterArray(i);
        return this.#fail("invalid json", "expected ',' or ']'", i);
      default:
        return this.#fail("invalid json", "data after the end of the document", i);
    }
  }

  #afterArray(i: number): number {
    this.#state = this.#topArray ? DONE : OBJ_NEXT;
    return i + 1;
  }

  #startValue(c: number, i: number, role: number): number {
    if (VALUE_START[c] !== 1) this.#fail("invalid json", `unexpected ${JSON.stringify(String.fromCharCode(c))}`, i);
    this.#cap = c === LBRACE || c === LBRACKET ? CONTAINER : c === QUOTE ? STRING : PRIMITIVE;
    this.#role = role;
    this.#depth = 0;
    this.#inString = false;
    this.#escape = false;
    this.#parts = [];
    this.#size = 0;
    this.#limit = role === AS_ELEMENT ? this.#max : MAX_META_BYTES;
    this.#startByte = this.#base + i;
    this.#startLine = this.#newlines + 1;
    return i;
  }

  /** Scans the captured value from `i`; returns where scanning stopped (the value's end or the chunk's). */
  #capture(buf: Buffer, i: number): number {
    const n = buf.length;
    let j = i;
    let end = -1;
    if (this.#cap === PRIMITIVE) {
      for (; j < n; j++) {
        const c = buf[j]!;
        if (WS[c] === 1 || c === COMMA || c === RBRACKET || c === RBRACE) {
          end = j;
          break;
        }
      }
    } else {
      // A STRING value is a container of depth 0 whose first byte (the quote) opens it.
      const string = this.#cap === STRING;
      let depth = this.#depth;
      let inString = this.#inString;
      let escape = this.#escape;
      let newlines = 0;
      for (; j < n; j++) {
        if (inString) {
          if (escape) {
            escape = false;
            continue;
          }
          const q = buf.indexOf(QUOTE, j);
          if (q === -1) {
            escape = oddBackslashesBefore(buf, n, j);
            j = n;
            break;
          }
          if (oddBackslashesBefore(buf, q, j)) {
            j = q;
            continue;
          }
          inString = false;
          j = q;
          if (string) {
            end = q + 1;
            break;
          }
          continue;
        }
        const c = buf[j]!;
        if (c === QUOTE) inString = true;
        else if (c === LBRACE || c === LBRACKET) depth++;
        else if (c === NL) newlines++;
        else if ((c === RBRACE || c === RBRACKET) && --depth === 0) {
          end = j + 1;
          break;
        }
      }
      this.#depth = depth;
      this.#inString = inString;
      this.#escape = escape;
      this.#newlines += newlines;
    }
    const stop = end === -1 ? n : end;
    this.#size += stop - i;
    if (this.#size <= this.#limit) this.#parts.push(buf.subarray(i, stop));
    else this.#parts = [];
    if (end !== -1) this.#finish();
    return stop;
  }

  #finish(): void {
    const role = this.#role;
    const over = this.#size > this.#limit;
    const text = over ? "" : (this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts)).toString("utf8");
    this.#cap = NONE;
    this.#parts = [];
    const [line, byte] = [this.#startLine, this.#startByte];
    if (role === AS_KEY) {
      this.#key = over ? "" : (this.#parseOrFail(text, "a key") as string);
      this.#state = COLON_;
    } else if (role === AS_META) {
      if (!over && this.#opts.meta !== undefined) this.#opts.meta[this.#key] = this.#parseOrFail(text, `"${this.#key}"`);
      this.#state = OBJ_NEXT;
    } else {
      this.#state = this.#state === SEQ ? SEQ : ARR_NEXT;
      if (over) {
        this.#out.push({ ok: false, reason: "too large", detail: `${this.#size} bytes (limit ${this.#limit})`, line, byte });
        return;
      }
      try {
        this.#out.push({ ok: true, value: JSON.parse(text), line, byte });
      } catch (err: unknown) {
        this.#out.push({ ok: false, reason: "invalid json", detail: (err as Error).message, line, byte });
      }
    }
  }

  #parseOrFail(text: string, what: string): unknown {
    try {
      return JSON.parse(text);
    } catch (err: unknown) {
      const at = `line ${this.#startLine}, byte ${this.#startByte}`;
      throw new FeedFormatError("invalid json", `${this.#opts.label}: ${what} at ${at} is not valid JSON: ${(err as Error).message}`);
    }
  }

  #fail(reason: string, what: string, i: number): never {
    throw new FeedFormatError(reason, `${this.#opts.label}: ${what} at line ${this.#newlines + 1}, byte ${this.#base + i}`);
  }
}

/** Whether the run of backslashes just before `at` (not looking before `from`) is odd, i.e. escapes `at`. */
function oddBackslashesBefore(buf: Buffer, at: number, from: number): boolean {
  let k = at - 1;
  while (k >= from && buf[k] === BACKSLASH) k--;
  return (at - 1 - k) % 2 === 1;
}

/** A framed value run through a record check, or a bad frame, as a feed item that says where it was. */
export function fromFrame<T>(frame: JsonFrame, check: (json: unknown) => FeedItem<T>, label: string): FeedItem<T> {
  const at = `${label} line ${frame.line}`;
  const item = frame.ok ? check(frame.value) : reject<T>(frame.reason, frame.detail);
  if (!item.ok) item.rejection.at = at;
  return item;
}

/**
 * The first line of a byte stream (up to `max` bytes) and the whole stream again, to choose a
 * framing (JSON lines or a JSON document) before reading on.
 */
export async function peekLine(
  bytes: AsyncIterable<Buffer>,
  max = 64 * 1024,
): Promise<{ first: string; bytes: AsyncGenerator<Buffer> }> {
  const it = bytes[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let size = 0;
  let ended = false;
  let nl = -1;
  while (nl === -1 && size < max) {
    const r = await it.next();
    if (r.done === true) {
      ended = true;
      break;
    }
    nl = r.value.indexOf(0x0a);
    if (nl !== -1) nl += size;
    head.push(r.value);
    size += r.value.length;
  }
  const all = Buffer.concat(head);
  const first = all.toString("utf8", 0, Math.min(nl === -1 ? all.length : nl, max));
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      if (all.length > 0) yield all;
      if (!ended) for (let r = await it.next(); r.done !== true; r = await it.next()) yield r.value;
    } finally {
      await it.return?.();
    }
  }
  return { first, bytes: replay() };
}
