/** The chunk format of a feed generation in level: frames written, read back in order, byte for byte. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChunkWriter, readChunk } from "../../aggregator/feeds/chunk-store.js";

const enc = new TextEncoder();

describe("feed chunk store", () => {
  it("round-trips raw and normalised frames in order, raw source text untouched", () => {
    const w = new ChunkWriter();
    const source = '{ "id" : "GHSA-1",\n  "summary": "naïve — ✓" }';
    const record = { id: "CVE-2024-0001", score: 9.8, note: "ünïcode ✓" };
    w.addRaw(enc.encode(source));
    w.addRecord(record);
    w.addRaw(enc.encode("{}"));
    assert.equal(w.count, 3);
    const frames = [...readChunk(w.take())];
    assert.deepEqual(frames, [
      { raw: true, text: source },
      { raw: false, text: JSON.stringify(record) },
      { raw: true, text: "{}" },
    ]);
  });

  it("writes [kind][big-endian byte length][UTF-8] frames, R for raw and N for normalised", () => {
    const w = new ChunkWriter();
    w.addRaw(enc.encode("é"));
    w.addRecord("x");
    const v = w.take();
    assert.deepEqual([...v], [0x52, 0, 0, 0, 2, 0xc3, 0xa9, 0x4e, 0, 0, 0, 3, 0x22, 0x78, 0x22]);
  });

  it("starts a new chunk after take, and reads a chunk that sits inside a larger buffer", () => {
    const w = new ChunkWriter();
    w.addRecord({ a: 1 });
    const first = w.take();
    assert.equal(w.count, 0);
    assert.equal(w.take().length, 0, "an empty chunk after take");
    w.addRecord({ b: 2 });
    const second = w.take();
    assert.deepEqual([...readChunk(second)], [{ raw: false, text: '{"b":2}' }]);
    // level hands values back as views into larger buffers.
    const outer = new Uint8Array(first.length + 7);
    outer.set(first, 3);
    assert.deepEqual([...readChunk(outer.subarray(3, 3 + first.length))], [{ raw: false, text: '{"a":1}' }]);
    assert.deepEqual([...readChunk(new Uint8Array(0))], []);
  });

  it("keeps many frames of every size", () => {
    const w = new ChunkWriter();
    const texts = Array.from({ length: 500 }, (_, i) => JSON.stringify({ i, pad: "x".repeat(i * 7) }));
    texts.forEach((t, i) => (i % 2 === 0 ? w.addRaw(enc.encode(t)) : w.addRecord(JSON.parse(t))));
    const back = [...readChunk(w.take())];
    assert.deepEqual(back.map((f) => f.text), texts);
    assert.deepEqual(back.map((f) => f.raw), texts.map((_, i) => i % 2 === 0));
  });
});
