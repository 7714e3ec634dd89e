/** The first line, and the stream again: nothing lost, and no more read than the line needs. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { peekLine } from "../../../aggregator/feeds/decode/peek-line.js";
import { chunks, drain, watched } from "./byte-source.js";

describe("peek at the first line", () => {
  it("gives the first line, found in a later chunk, and then every byte again", async () => {
    const text = Buffer.from('{"id":"GHSA-1","modified":"2024-01-01T00:00:00Z"}\n{"id":"GHSA-2"}\n');
    for (const size of [1, 4, 50, 51, 1000]) {
      const { first, bytes } = await peekLine(chunks(text, size));
      assert.equal(first, '{"id":"GHSA-1","modified":"2024-01-01T00:00:00Z"}', `chunks of ${size}`);
      assert.deepEqual(Buffer.concat(await drain(bytes)), text, `chunks of ${size}`);
    }
  });

  it("gives the whole text as the line when there is no LF, and an empty line for an empty stream", async () => {
    const a = await peekLine(chunks(Buffer.from('[{"id": 1}]'), 3));
    assert.equal(a.first, '[{"id": 1}]');
    assert.equal(Buffer.concat(await drain(a.bytes)).toString(), '[{"id": 1}]');
    const b = await peekLine(chunks(Buffer.alloc(0), 3));
    assert.equal(b.first, "");
    assert.deepEqual(await drain(b.bytes), []);
  });

  it("reads no further than `max` bytes into a line without an end, and cuts the line there", async () => {
    const src = watched(Buffer.alloc(1024, 0x20));
    const { first, bytes } = await peekLine(src.source, 10_000);
    assert.equal(first.length, 10_000);
    assert.equal(src.pulled(), 10, "ten 1 KiB chunks reach the limit");
    for await (const b of bytes) if (b.length > 0) break;
    assert.ok(src.closedEarly());
  });

  it("closes the source when the replay is left early", async () => {
    const src = watched(Buffer.from("line\n"), 100);
    const { bytes } = await peekLine(src.source);
    for await (const b of bytes) if (b.length > 0) break;
    assert.ok(src.closedEarly());
    assert.ok(src.pulled() < 100);
  });
});
