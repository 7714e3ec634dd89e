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
import yauzl from "yauzl";
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
 */
export async function* zipEntries(
  path: string,
  wanted: (name: string) => boolean,
  maxEntryBytes = MAX_RECORD_BYTES,
): AsyncGenerator<ZipEntry> {
  const file = await open(path);
  let zip: yauzl.ZipFile;
  let reader: BlockCachedReader;
  try {
    reader = new BlockCachedReader(file, (await file.stat()).size);
    zip = await yauzl.fromRandomAccessReaderPromise(reader, reader.size, {
      lazyEntries: true,
      decodeStrings: false,
      // Sizes and CRC are checked per entry in readEntry; yauzl would fail the whole archive.
      validateEntrySizes: false,
      autoClose: true,
    });
  } catch (err: unknown) {
    await file.close().catch(() => undefined);
    throw new FeedFormatError("invalid zip", `${path} is not a readable zip archive: ${(err as Error).message}`, { cause: err });
  }
  try {
    const entries = zip.eachEntry();
    for (;;) {
      let next: IteratorResult<yauzl.Entry>;
      try {
        next = await entries.next();
      } catch (err: unknown) {
        throw new FeedFormatError("invalid zip", `${path}: broken central directory: ${(err as Error).message}`, { cause: err });
      }
      if (next.done === true) return;
      const entry = next.value;
      // decodeStrings is off so that a bad name rejects one entry instead of failing the archive.
      const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, false);
      if (isUnsafeEntryName(name)) {
        yield { name, ok: false, reason: "path traversal", detail: `entry name ${JSON.stringify(name)} escapes the archive` };
        continue;
      }
      if (name.endsWith("/")) continue;
      if (!wanted(name)) {
        yield { name, ok: "skipped" };
        continue;
      }
      yield await readEntry(zip, reader, entry, name, maxEntryBytes);
    }
  } finally {
    zip.close();
  }
}

/**
 * One entry's bytes, read through the block cache and inflated synchronously: entries are small,
 * and a zlib stream per entry costs a thread-pool trip per chunk. The inflated size must match the
 * header and the CRC must match the data.
 */
async function readEntry(zip: yauzl.ZipFile, reader: BlockCachedReader, entry: yauzl.Entry, name: string, max: number): Promise<ZipEntry> {
  const fail = (reason: string, detail: string): ZipEntry => ({ name, ok: false, reason, detail });
  if (entry.uncompressedSize > max) return fail("too large", `${entry.uncompressedSize} bytes uncompressed (limit ${max})`);
  if (!entry.canDecodeFileData()) return fail("invalid zip entry", `encrypted, or compression method ${entry.compressionMethod}`);
  // Deflate never grows data by more than a few bytes per 16 KiB block.
  if (entry.compressedSize > max + max / 256 + 1024) return fail("too large", `${entry.compressedSize} bytes compressed`);
  let data: Buffer;
  try {
    const { fileDataStart } = await zip.readLocalFileHeaderPromise(entry, { minimal: true });
    const raw = Buffer.allocUnsafe(entry.compressedSize);
    await reader.readInto(raw, fileDataStart);
    data = entry.compressionMethod === 8 ? zlib.inflateRawSync(raw, { maxOutputLength: max }) : raw;
  } catch (err: unknown) {
    if (err instanceof RangeError) return fail("too large", `inflates past ${max} bytes`);
    return fail("invalid zip entry", (err as Error).message);
  }
  if (data.length !== entry.uncompressedSize) {
    return fail("invalid zip entry", `${data.length} bytes, the header says ${entry.uncompressedSize}`);
  }
  // zlib.crc32 arrived in Node 20.15.
  if (typeof zlib.crc32 === "function" && zlib.crc32(data) !== entry.crc32) return fail("invalid zip entry", "CRC mismatch");
  return { name, ok: true, data };
}

const BLOCK = 1024 * 1024;
const CACHED_BLOCKS = 8;

/**
 * yauzl's own file reader makes three or four small reads per entry, each a trip through the
 * libuv thread pool (150 µs apiece on a 2-CPU VM, where yauzl alone read 1,600 entries/s). This
 * one reads 1 MiB blocks and keeps the last few, which serve both the central directory cursor and
 * the entry data cursor.
 */
class BlockCachedReader extends yauzl.RandomAccessReader {
  readonly size: number;
  readonly #file: FileHandle;
  readonly #blocks = new Map<number, Promise<Buffer>>();

  constructor(file: FileHandle, size: number) {
    super();
    this.#file = file;
    this.size = size;
  }

  #block(k: number): Promise<Buffer> {
    const cached = this.#blocks.get(k);
    if (cached !== undefined) {
      this.#blocks.delete(k);
      this.#blocks.set(k, cached);
      return cached;
    }
    const block = (async () => {
      const buf = Buffer.allocUnsafe(Math.max(0, Math.min(BLOCK, this.size - k * BLOCK)));
      const { bytesRead } = await this.#file.read(buf, 0, buf.length, k * BLOCK);
      return buf.subarray(0, bytesRead);
    })();
    block.catch(() => this.#blocks.delete(k));
    this.#blocks.set(k, block);
    if (this.#blocks.size > CACHED_BLOCKS) this.#blocks.delete(this.#blocks.keys().next().value!);
    return block;
  }

  async *#range(start: number, end: number): AsyncGenerator<Buffer> {
    for (let p = start; p < end; ) {
      const k = Math.floor(p / BLOCK);
      const block = await this.#block(k);
      const [from, to] = [p - k * BLOCK, Math.min(block.length, end - k * BLOCK)];
      if (to <= from) throw new Error(`unexpected end of file at byte ${p}`);
      yield block.subarray(from, to);
      p += to - from;
    }
  }

  override _readStreamForRange(start: number, end: number): Readable {
    return Readable.from(this.#range(start, end), { objectMode: false });
  }

  /** Fills `buffer` from `position`. */
  async readInto(buffer: Buffer, position: number, offset = 0, length = buffer.length - offset): Promise<void> {
    let at = offset;
    for await (const part of this.#range(position, position + length)) at += part.copy(buffer, at);
  }

  override read(buffer: Buffer, offset: number, length: number, position: number, callback: (err: Error | null) => void): void {
    this.readInto(buffer, position, offset, length).then(
      () => callback(null),
      (err: unknown) => callback(err as Error),
    );
  }

  override close(callback: (err: Error | null) => void): void {
    this.#blocks.clear();
    this.#file.close().then(
      () => callback(null),
      (err: unknown) => callback(err as Error),
    );
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
