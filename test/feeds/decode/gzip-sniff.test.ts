/** Transparent gunzip: chosen by the first two bytes however the input is chunked, errors classed. */
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { decoded } from "../../../aggregator/feeds/decode/gzip-sniff.js";
import { FeedFormatError } from "../../../aggregator/feeds/parse/types.js";
import { chunks, drain, watched } from "./byte-source.js";

const text = Buffer.from("cve,epss,percentile\nCVE-2021-44228,0.94358,0.99955\n".repeat(200));
const joined = async (it: AsyncIterable<Buffer>): Promise<Buffer> => Buffer.concat(await drain(it));

describe("gzip sniffing", () => {
  it("passes plain bytes through unchanged, in chunks of any size", async () => {
    for (const size of [1, 2, 3, 1000, text.length]) assert.deepEqual(await joined(decoded(chunks(text, size))), text, `chunks of ${size}`);
  });

  it("gunzips when the magic is split across the first two chunks", async () => {
    const gz = gzipSync(text);
    assert.deepEqual(await joined(decoded(chunks(gz, [1, 2, 5]))), text);
    assert.deepEqual(await joined(decoded(chunks(gz, 1))), text);
  });

  it("takes a lone 0x1f, or 0x1f then another byte, as plain", async () => {
    assert.deepEqual(await joined(decoded(chunks(Buffer.from([0x1f]), 1))), Buffer.from([0x1f]));
    const almost = Buffer.from([0x1f, 0x8c, 0x41]);
    assert.deepEqual(await joined(decoded(chunks(almost, 1))), almost);
  });

  it("yields nothing for an empty input", async () => {
    assert.deepEqual(await drain(decoded(chunks(Buffer.alloc(0), 1))), []);
  });

  it("reads concatenated gzip members as one stream (what `cat a.gz b.gz` makes)", async () => {
    const two = Buffer.concat([gzipSync(Buffer.from("first\n")), gzipSync(Buffer.from("second\n"))]);
    assert.equal((await joined(decoded(chunks(two, 7)))).toString(), "first\nsecond\n");
  });

  it("accepts strings and Uint8Array views as chunks, refuses anything else", async () => {
    const view = new Uint8Array([0x78, 0x78, 0x61, 0x62, 0x63, 0x78, 0x78]).subarray(2, 5);
    assert.equal((await joined(decoded(Readable.from(["de", view, "f"], { objectMode: true })))).toString(), "deabcf");
    await assert.rejects(
      drain(decoded(Readable.from(["ab", 42], { objectMode: true }))),
      (err: unknown) => err instanceof FeedFormatError && err.reason === "invalid input" && /yielded number/.test(err.message),
    );
  });

  it("ends a cut gzip stream with 'truncated', after the bytes it could decode", async () => {
    const gz = gzipSync(text);
    const out: Buffer[] = [];
    await assert.rejects(
      async () => {
        for await (const b of decoded(chunks(gz.subarray(0, gz.length - 20), 64))) out.push(b);
      },
      (err: unknown) => err instanceof FeedFormatError && err.reason === "truncated" && /gzip stream truncated after \d+ decompressed bytes/.test(err.message),
    );
    assert.ok(text.subarray(0, Buffer.concat(out).length).equals(Buffer.concat(out)), "what came out is a prefix of the text");
  });

  it("ends a corrupt gzip stream with 'invalid gzip' (a bad CRC in the trailer, bad deflate data)", async () => {
    const gz = gzipSync(text);
    const badCrc = Buffer.from(gz);
    badCrc.writeUInt32LE(badCrc.readUInt32LE(gz.length - 8) ^ 1, gz.length - 8);
    await assert.rejects(drain(decoded(chunks(badCrc, 100))), (err: unknown) => err instanceof FeedFormatError && err.reason === "invalid gzip");
    const badData = Buffer.concat([gz.subarray(0, 10), Buffer.alloc(50, 0xff), gz.subarray(60)]);
    await assert.rejects(drain(decoded(chunks(badData, 100))), (err: unknown) => err instanceof FeedFormatError && err.reason === "invalid gzip");
  });

  it("lets a failure of the source through as it is, plain or gzipped", async () => {
    const boom = new Error("connection reset");
    for (const head of [Buffer.from("plain"), gzipSync(text).subarray(0, 30)]) {
      async function* failing(): AsyncGenerator<Buffer> {
        yield head;
        throw boom;
      }
      await assert.rejects(drain(decoded(failing())), (err: unknown) => err === boom);
    }
  });

  it("closes its input when the consumer stops early", async () => {
    for (const part of [Buffer.from("plain text\n"), gzipSync(text)]) {
      const src = watched(part, 1000);
      for await (const b of decoded(src.source)) if (b.length > 0) break;
      assert.ok(src.closedEarly(), `closed early (${part[0] === 0x1f ? "gzip" : "plain"})`);
      assert.ok(src.pulled() < 1000);
    }
  });
});
