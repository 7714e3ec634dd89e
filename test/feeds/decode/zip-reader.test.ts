/**
 * The zip reader against archives written by yazl: stored and deflated entries, zip64 end records
 * and extra fields, data descriptors, comments; then yazl's output patched into the corrupt,
 * truncated and hostile archives a feed mirror could serve, and the bounds that keep a zip bomb
 * or a lying header from costing memory.
 */
import assert from "node:assert/strict";
import { closeSync, ftruncateSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MAX_CENTRAL_DIRECTORY, type ZipEntry, isUnsafeEntryName, zipEntries } from "../../../aggregator/feeds/decode/zip-reader.js";
import { FeedFormatError, MAX_RECORD_BYTES } from "../../../aggregator/feeds/parse/types.js";
import { type ArchiveEntry, centralRecord, endRecord, localHeader, replaced, yazlArchive } from "./yazl-archive.js";

const record = (n: number): Buffer => Buffer.from(JSON.stringify({ id: `GHSA-${n}`, summary: `advisory ${n} `.repeat(20 + n) }));

describe("zip reader", () => {
  let dir = "";
  let serial = 0;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "shadowlayer-zip-test-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const fileOf = (zip: Buffer): string => {
    const path = join(dir, `${serial++}.zip`);
    writeFileSync(path, zip);
    return path;
  };
  /** Every entry the reader gives, or the error that failed the archive (with the entries before it). */
  const read = async (zip: Buffer | string, opts: { wanted?: (name: string) => boolean; max?: number } = {}) => {
    const entries: ZipEntry[] = [];
    try {
      for await (const e of zipEntries(typeof zip === "string" ? zip : fileOf(zip), opts.wanted ?? (() => true), opts.max)) entries.push(e);
    } catch (err: unknown) {
      if (!(err instanceof FeedFormatError)) throw err;
      return { entries, error: err };
    }
    return { entries, error: undefined };
  };
  const byName = (entries: ZipEntry[]) => new Map(entries.map((e) => [e.name, e]));
  const okData = (e: ZipEntry | undefined): Buffer => {
    assert.ok(e !== undefined && e.ok === true, JSON.stringify(e));
    return e.data;
  };
  const failure = (e: ZipEntry | undefined): { reason: string; detail: string } => {
    assert.ok(e !== undefined && e.ok === false, JSON.stringify(e));
    return e;
  };

  describe("formats", () => {
    it("reads stored and deflated entries", async () => {
      const zip = await yazlArchive([
        { name: "stored.json", data: record(1), compress: false },
        { name: "deflated.json", data: record(2) },
        { name: "empty.json", data: Buffer.alloc(0) },
      ]);
      assert.equal(zip.readUInt16LE(localHeader(zip, "stored.json") + 8), 0, "method: stored");
      assert.equal(zip.readUInt16LE(localHeader(zip, "deflated.json") + 8), 8, "method: deflate");
      const { entries, error } = await read(zip);
      assert.equal(error, undefined);
      assert.deepEqual(
        entries.map((e) => e.name),
        ["stored.json", "deflated.json", "empty.json"],
      );
      assert.deepEqual(okData(entries[0]), record(1));
      assert.deepEqual(okData(entries[1]), record(2));
      assert.deepEqual(okData(entries[2]), Buffer.alloc(0));
    });

    it("reads a zip64 archive: the zip64 end record and locator, 64-bit fields after a timestamp extra field", async () => {
      const entries: ArchiveEntry[] = [
        { name: "a.json", data: record(1), comment: "first" },
        { name: "b.json", data: record(2), compress: false },
        { name: "c.json", data: record(3), stream: true },
      ];
      const zip = await yazlArchive(entries, { zip64: true, comment: "osv.dev export" });
      // What makes it zip64: 0xffff/0xffffffff in the end record and the central directory, the real values elsewhere.
      assert.notEqual(zip.indexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06])), -1, "zip64 end record");
      assert.notEqual(zip.indexOf(Buffer.from([0x50, 0x4b, 0x06, 0x07])), -1, "zip64 locator");
      const end = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
      assert.deepEqual([zip.readUInt16LE(end + 10), zip.readUInt32LE(end + 12), zip.readUInt32LE(end + 16)], [0xffff, 0xffffffff, 0xffffffff]);
      const cd = centralRecord(zip, "a.json");
      assert.deepEqual([zip.readUInt32LE(cd + 20), zip.readUInt32LE(cd + 24), zip.readUInt32LE(cd + 42)], [0xffffffff, 0xffffffff, 0xffffffff]);
      assert.equal(zip.readUInt16LE(cd + 46 + 6), 0x5455, "a timestamp field comes first");
      assert.equal(zip.readUInt16LE(cd + 46 + 6 + 9), 0x0001, "then the zip64 field");

      const got = byName((await read(zip)).entries);
      for (const e of entries) assert.deepEqual(okData(got.get(e.name)), e.data, e.name);
    });

    it("takes from the zip64 extra field only the values whose 32-bit field says so, in order", async () => {
      const zip = await yazlArchive([{ name: "only-comp-and-offset.json", data: record(1) }, { name: "only-offset.json", data: record(2) }], { zip64: true });
      const patched = Buffer.from(zip);
      const rewrite = (name: string, keep: 1 | 2) => {
        const cd = centralRecord(patched, name);
        const x = cd + 46 + name.length + 9; // the zip64 field, after the timestamp field
        const [uncomp, comp, local] = [0, 1, 2].map((k) => patched.readBigUInt64LE(x + 4 + 8 * k));
        patched.writeUInt32LE(Number(uncomp), cd + 24);
        if (keep === 1) patched.writeUInt32LE(Number(comp), cd + 20);
        const kept = keep === 2 ? [comp!, local!] : [local!];
        patched.writeUInt16LE(8 * kept.length, x + 2);
        kept.forEach((v, k) => patched.writeBigUInt64LE(v, x + 4 + 8 * k));
        // The bytes left over become a field of an unknown kind, so the extra keeps its length.
        const rest = x + 4 + 8 * kept.length;
        patched.writeUInt16LE(0xcafe, rest);
        patched.writeUInt16LE(24 - 8 * kept.length - 4, rest + 2);
        patched.fill(0xee, rest + 4, x + 28);
      };
      rewrite("only-comp-and-offset.json", 2);
      rewrite("only-offset.json", 1);
      const got = byName((await read(patched)).entries);
      assert.deepEqual(okData(got.get("only-comp-and-offset.json")), record(1));
      assert.deepEqual(okData(got.get("only-offset.json")), record(2));
    });

    it("reads entries written with data descriptors (sizes known only after the data), zip64 or not", async () => {
      for (const zip64 of [false, true]) {
        const zip = await yazlArchive(
          [
            { name: "streamed.json", data: record(1), stream: true },
            { name: "streamed-stored.json", data: record(2), stream: true, compress: false },
            { name: "after.json", data: record(3) },
          ],
          { zip64 },
        );
        const local = localHeader(zip, "streamed.json");
        assert.equal(zip.readUInt16LE(local + 6) & 0x8, 0x8, "bit 3: a data descriptor follows");
        assert.equal(zip.readUInt32LE(local + 18), 0, "the local header has no size");
        const cd = centralRecord(zip, "streamed.json");
        const comp = zip64 ? Number(zip.readBigUInt64LE(cd + 46 + 13 + 9 + 12)) : zip.readUInt32LE(cd + 20);
        assert.equal(zip.readUInt32LE(local + 30 + 13 + comp), 0x08074b50, "the descriptor's signature right after the data");
        const got = byName((await read(zip)).entries);
        assert.deepEqual(okData(got.get("streamed.json")), record(1));
        assert.deepEqual(okData(got.get("streamed-stored.json")), record(2));
        assert.deepEqual(okData(got.get("after.json")), record(3));
      }
    });

    it("passes directories over, skips unwanted entries unread, and decodes names as the UTF-8 flag says", async () => {
      const zip = await yazlArchive([{ directory: "debian/" }, { name: "debian/café.json", data: record(1) }, { name: "README.txt", data: Buffer.from("hi") }]);
      // Unread: a skipped entry with a wrong CRC is still just skipped.
      const badReadme = Buffer.from(zip);
      badReadme.writeUInt32LE(1234, centralRecord(zip, "README.txt") + 16);
      const { entries } = await read(badReadme, { wanted: (n) => n.endsWith(".json") });
      assert.deepEqual(entries.map((e) => [e.name, e.ok]), [
        ["debian/café.json", true],
        ["README.txt", "skipped"],
      ]);
      // Without bit 11 a name is CP437, read as Latin-1: the UTF-8 bytes of "é" become two characters.
      const cp437 = Buffer.from(zip);
      const cd = centralRecord(zip, "debian/café.json");
      cp437.writeUInt16LE(cp437.readUInt16LE(cd + 8) & ~0x800, cd + 8);
      assert.equal((await read(cp437)).entries[0]?.name, "debian/cafÃ©.json");
    });
  });

  describe("hostile names", () => {
    it("knows the names that escape an extraction directory", () => {
      for (const bad of ["../a.json", "a/../../b.json", "..", "a\\..\\b", "/etc/passwd", "\\\\server\\share", "C:\\x.json", "c:x.json", "a\0b.json"]) {
        assert.ok(isUnsafeEntryName(bad), JSON.stringify(bad));
      }
      for (const good of ["a..b.json", "..a.json", "a../b.json", "...", "npm/GHSA-1.json", "pypi/nested/PYSEC-1.json", "ümlaut.json", "ab:c.json"]) {
        assert.ok(!isUnsafeEntryName(good), JSON.stringify(good));
      }
    });

    it("rejects entries named to escape, without reading them, and reads the rest", async () => {
      // yazl refuses such names; they are patched in afterwards, with the same length.
      let zip = await yazlArchive(["xx/evil.json", "_abs.json", "QQdrive.json", "yy/win.json", "nulXname.json", "fine.json"].map((name, n) => ({ name, data: record(n) })));
      for (const [from, to] of [
        ["xx/evil", "../evil"],
        ["_abs", "/abs"],
        ["QQdrive", "C:drive"],
        ["yy/win", "..\\win"],
        ["nulX", "nul\0"],
      ] as const) {
        zip = replaced(zip, from, to);
      }
      const { entries, error } = await read(zip);
      assert.equal(error, undefined);
      assert.deepEqual(
        entries.map((e) => (e.ok === false ? `${e.reason}: ${e.name}` : e.name)),
        ["path traversal: ../evil.json", "path traversal: /abs.json", "path traversal: C:drive.json", "path traversal: ..\\win.json", "path traversal: nul\0name.json", "fine.json"],
      );
    });
  });

  describe("bounds", () => {
    it("refuses an entry whose header says it is over the limit", async () => {
      // Stored, so that without this check the entry would read whole: it is within the compressed bound.
      const zip = await yazlArchive([{ name: "big.json", data: Buffer.alloc(2000, 0x20), compress: false }, { name: "ok.json", data: Buffer.alloc(1000, 0x20), compress: false }]);
      const got = byName((await read(zip, { max: 1000 })).entries);
      assert.deepEqual(failure(got.get("big.json")), { name: "big.json", ok: false, reason: "too large", detail: "2000 bytes uncompressed (limit 1000)" });
      assert.equal(okData(got.get("ok.json")).length, 1000, "exactly the limit is fine");
    });

    it("refuses an entry whose compressed data is larger than the limit allows, whatever its header claims", async () => {
      const zip = await yazlArchive([{ name: "lying.json", data: Buffer.alloc(3000, 0x20), compress: false }]);
      zip.writeUInt32LE(10, centralRecord(zip, "lying.json") + 24);
      const got = byName((await read(zip, { max: 1000 })).entries);
      assert.deepEqual(failure(got.get("lying.json")), { name: "lying.json", ok: false, reason: "too large", detail: "3000 bytes compressed" });
    });

    it("stops inflating a zip bomb at the limit, whatever its header claims", async () => {
      const bomb = Buffer.alloc(4 * 1024 * 1024);
      const zip = await yazlArchive([{ name: "bomb.json", data: bomb }]);
      const cd = centralRecord(zip, "bomb.json");
      assert.ok(zip.readUInt32LE(cd + 20) < 8192, "4 MiB of zeros deflate to a few KiB");
      zip.writeUInt32LE(100, cd + 24);
      const got = byName((await read(zip, { max: 1024 * 1024 })).entries);
      assert.deepEqual(failure(got.get("bomb.json")), { name: "bomb.json", ok: false, reason: "too large", detail: "inflates past 1048576 bytes" });
    });

    it("holds entries to the record limit when no limit is given", async () => {
      const zip = await yazlArchive([
        { name: "at-limit.json", data: Buffer.alloc(MAX_RECORD_BYTES, 0x20), compress: false },
        { name: "over.json", data: Buffer.alloc(MAX_RECORD_BYTES + 1, 0x20), compress: false },
      ]);
      const got = byName((await read(zip)).entries);
      assert.equal(okData(got.get("at-limit.json")).length, MAX_RECORD_BYTES);
      assert.equal(failure(got.get("over.json")).reason, "too large");
    });

    it("refuses a central directory over 512 MiB before reading it", async () => {
      // A sparse file: the directory's bytes cost no disk, and zeros would fail only after being read.
      const path = join(dir, "huge-directory.zip");
      const fd = openSync(path, "w");
      try {
        const size = MAX_CENTRAL_DIRECTORY + 1 + 22;
        ftruncateSync(fd, size);
        const end = Buffer.alloc(22);
        end.writeUInt32LE(0x06054b50, 0);
        end.writeUInt16LE(1, 8);
        end.writeUInt16LE(1, 10);
        end.writeUInt32LE(MAX_CENTRAL_DIRECTORY + 1, 12);
        end.writeUInt32LE(0, 16);
        writeSync(fd, end, 0, 22, size - 22);
      } finally {
        closeSync(fd);
      }
      const { error } = await read(path);
      assert.equal(error?.reason, "too large", error?.message);
      assert.match(error.message, new RegExp(`a central directory of ${MAX_CENTRAL_DIRECTORY + 1} bytes`));
      rmSync(path);
    });
  });

  describe("corrupt and truncated archives", () => {
    it("fails the archive as a whole when its end records or central directory cannot be read", async () => {
      const zip = await yazlArchive([1, 2, 3].map((n) => ({ name: `${n}.json`, data: record(n) })));
      const zip64 = await yazlArchive([1, 2, 3].map((n) => ({ name: `${n}.json`, data: record(n) })), { zip64: true });
      const end = endRecord(zip);
      const end64 = endRecord(zip64);
      const patch = (buf: Buffer, f: (b: Buffer) => void): Buffer => {
        const b = Buffer.from(buf);
        f(b);
        return b;
      };
      const cases: Array<[string, Buffer, RegExp]> = [
        ["an empty file", Buffer.alloc(0), /not a readable zip archive: no end of central directory record/],
        ["an HTML error page", Buffer.from("<html><body>502 Bad Gateway</body></html>"), /no end of central directory record/],
        ["a download cut short", zip.subarray(0, Math.floor(zip.length / 2)), /no end of central directory record/],
        ["one cut within the end record", zip.subarray(0, zip.length - 5), /no end of central directory record/],
        ["one missing its first bytes", zip.subarray(100), /central directory \(\d+ bytes at \d+\) runs past the end of the file/],
        ["a zip64 archive without its locator", patch(zip64, (b) => b.writeUInt32LE(0, end64 - 20)), /zip64 end of central directory locator missing/],
        ["a zip64 locator pointing elsewhere", patch(zip64, (b) => b.writeBigUInt64LE(0n, end64 - 20 + 8)), /zip64 end of central directory record missing/],
        ["a zip64 locator pointing past the end", patch(zip64, (b) => b.writeBigUInt64LE(BigInt(zip64.length), end64 - 20 + 8)), /outside the \d+-byte file/],
        ["a broken directory record", patch(zip, (b) => b.writeUInt32LE(0, centralRecord(zip, "1.json"))), /broken central directory at entry 0/],
        ["an end record counting one entry more", patch(zip, (b) => b.writeUInt16LE(4, end + 10)), /broken central directory at entry 3/],
        ["a directory said to be shorter than it is", patch(zip, (b) => b.writeUInt32LE(b.readUInt32LE(end + 12) - 5, end + 12)), /central directory entry 2 runs past the directory's end/],
        ["a short zip64 extra field", patch(zip64, (b) => b.writeUInt16LE(8, centralRecord(zip64, "2.json") + 46 + 6 + 9 + 2)), /zip64 extra field of 2.json is short/],
      ];
      for (const [what, bytes, message] of cases) {
        const { entries, error } = await read(bytes);
        assert.equal(error?.reason, "invalid zip", `${what}: ${error?.message ?? "no error"}`);
        assert.match(error.message, message, what);
        if (what.startsWith("a short zip64")) assert.equal(entries.length, 1, "the entries before it were read");
      }
    });

    it("fails a bad entry alone, saying why, and reads the others", async () => {
      const names = ["crc", "size", "nolocal", "corrupt", "locked", "bzip2", "pastend", "good"].map((n) => `${n}.json`);
      const zip = await yazlArchive(names.map((name, n) => ({ name, data: record(n), compress: name !== "size.json" })));
      const cd = (name: string) => centralRecord(zip, name);
      zip.writeUInt32LE((zip.readUInt32LE(cd("crc.json") + 16) ^ 1) >>> 0, cd("crc.json") + 16);
      zip.writeUInt32LE(zip.readUInt32LE(cd("size.json") + 24) - 1, cd("size.json") + 24);
      zip.writeUInt32LE(0x04034b51, localHeader(zip, "nolocal.json"));
      const corrupt = localHeader(zip, "corrupt.json") + 30 + "corrupt.json".length;
      zip.fill(0xff, corrupt, corrupt + 16);
      zip.writeUInt16LE(zip.readUInt16LE(cd("locked.json") + 8) | 0x1, cd("locked.json") + 8);
      zip.writeUInt16LE(12, cd("bzip2.json") + 10);
      zip.writeUInt32LE(zip.length + 100, cd("pastend.json") + 42);
      const got = byName((await read(zip)).entries);
      const why = (name: string) => {
        const f = failure(got.get(name));
        assert.equal(f.reason, "invalid zip entry", `${name}: ${f.reason} ${f.detail}`);
        return f.detail;
      };
      assert.equal(why("crc.json"), "CRC mismatch");
      assert.equal(why("size.json"), `${record(1).length} bytes, the header says ${record(1).length - 1}`);
      assert.match(why("nolocal.json"), /^no local header at byte \d+$/);
      assert.match(why("corrupt.json"), /invalid|incorrect|unexpected/);
      assert.equal(why("locked.json"), "encrypted, or compression method 8");
      assert.equal(why("bzip2.json"), "encrypted, or compression method 12");
      assert.match(why("pastend.json"), /outside the \d+-byte file/);
      assert.deepEqual(okData(got.get("good.json")), record(7));
    });

    it("closes the archive when the consumer stops early, and when the archive fails", async () => {
      const zip = await yazlArchive([1, 2, 3].map((n) => ({ name: `${n}.json`, data: record(n) })));
      const fds = () => readdirSync("/proc/self/fd").length;
      const before = fds();
      for await (const e of zipEntries(fileOf(zip), () => true)) if (e.ok === true) break;
      await read(zip.subarray(0, zip.length - 5));
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(fds(), before);
    });
  });
});
