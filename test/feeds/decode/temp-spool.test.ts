/** The spool: a private file with the stream's bytes, gone after remove() or a failed source. */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname } from "node:path";
import { describe, it } from "node:test";
import { spool } from "../../../aggregator/feeds/decode/temp-spool.js";
import { chunks } from "./byte-source.js";

const prefix = `shadowlayer-spool-test-${process.pid}-`;
const leftovers = (): string[] => readdirSync(tmpdir()).filter((n) => n.startsWith(prefix));

describe("temp spool", () => {
  it("writes every byte to a file only this user can read, in its own directory, and removes both", async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    const spooled = await spool(chunks(data, 65536), prefix);
    assert.deepEqual(readFileSync(spooled.path), data);
    assert.equal(statSync(spooled.path).mode & 0o777, 0o600);
    assert.equal(dirname(dirname(spooled.path)), tmpdir());
    assert.ok(basename(dirname(spooled.path)).startsWith(prefix));
    assert.equal(statSync(dirname(spooled.path)).mode & 0o077, 0, "the directory is private too");
    await spooled.remove();
    assert.deepEqual(leftovers(), []);
    await spooled.remove();
  });

  it("leaves nothing behind and throws the source's error when the source fails", async () => {
    const boom = new Error("download cut");
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(100_000, 1);
      throw boom;
    }
    await assert.rejects(spool(failing(), prefix), (err: unknown) => err === boom);
    assert.deepEqual(leftovers(), []);
  });

  it("spools an empty stream as an empty file", async () => {
    const spooled = await spool(chunks(Buffer.alloc(0), 1), prefix);
    assert.equal(readFileSync(spooled.path).length, 0);
    await spooled.remove();
  });
});
