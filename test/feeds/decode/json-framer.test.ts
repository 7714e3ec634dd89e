/**
 * The JSON framer: the same records wherever the chunks are cut (escaped quotes, backslashes and
 * brackets inside strings included), positions that point at each record, structural errors that
 * say where, and the bounds on a record and on a header field.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type JsonFrame, type JsonFrameOptions, MAX_META_BYTES, jsonFrames } from "../../../aggregator/feeds/decode/json-framer.js";
import { FeedFormatError } from "../../../aggregator/feeds/parse/types.js";
import { chunks } from "./byte-source.js";

interface Run {
  frames: JsonFrame[];
  meta: Record<string, unknown>;
  error?: FeedFormatError;
}

/** Frames `text` cut as `size` says; a structural error is caught and returned with the frames before it. */
async function run(text: string | Buffer, size: number | number[], opts: Partial<JsonFrameOptions> = {}): Promise<Run> {
  const meta: Record<string, unknown> = {};
  const frames: JsonFrame[] = [];
  const buf = typeof text === "string" ? Buffer.from(text) : text;
  try {
    for await (const f of jsonFrames(chunks(buf, size), { label: "test", meta, ...opts })) frames.push(f);
  } catch (err: unknown) {
    if (!(err instanceof FeedFormatError)) throw err;
    return { frames, meta, error: err };
  }
  return { frames, meta };
}

const values = (r: Run): unknown[] => r.frames.map((f) => (f.ok ? f.value : `!${f.reason}`));

/** Every way to cut `text` in two, and in three with a one- or two-byte middle, and in single bytes. */
function cuts(text: string): Array<number | number[]> {
  const n = Buffer.byteLength(text);
  const out: Array<number | number[]> = [1];
  for (let a = 0; a <= n; a++) out.push([a], [a, a + 1], [a, a + 2]);
  return out;
}

// Strings that hold quotes, backslashes and brackets: a scanner that miscounts any of them frames wrongly.
const CATALOG = String.raw`{"catalogVersion": "v\"1]}", "count": 3, "vulnerabilities": [
 {"a": "x\\", "b": "]}\"[{", "c": [1, {"d": "\\\"}"}], "e": "\\\\"},
 "tail\"]", -3.5e2, true, null, [], {},
 {"f": "\u005d\u0022", "g": ""}
], "after": {"k": "}]\\"}, "n": [1, 2]}`;

describe("JSON framer", () => {
  it("frames the elements under a field and keeps the other fields as meta, wherever the chunks are cut", async () => {
    const want = JSON.parse(CATALOG) as Record<string, unknown>;
    const wantMeta = { catalogVersion: want["catalogVersion"], count: 3, after: want["after"], n: [1, 2] };
    for (const size of cuts(CATALOG)) {
      const r = await run(CATALOG, size, { field: "vulnerabilities" });
      assert.equal(r.error, undefined, `${JSON.stringify(size)}: ${r.error?.message}`);
      assert.deepEqual(values(r), want["vulnerabilities"], `cut at ${JSON.stringify(size)}`);
      assert.deepEqual(r.meta, wantMeta, `cut at ${JSON.stringify(size)}`);
    }
  });

  it("frames a top-level array, and a sequence of values (JSON lines or concatenated), wherever the chunks are cut", async () => {
    const array = String.raw`[{"a":"\"]"},"\\",[["]"]],0,"}"]`;
    const seq = String.raw`{"a":"}{"}` + "\n" + String.raw`{"b":["]"]}{"c":"\\"}` + "\r\n" + String.raw`"s\"" 42 true` + "\n-1.5e3";
    const wantSeq = [{ a: "}{" }, { b: ["]"] }, { c: "\\" }, 's"', 42, true, -1500];
    for (const size of cuts(array)) assert.deepEqual(values(await run(array, size)), JSON.parse(array), `cut at ${JSON.stringify(size)}`);
    for (const size of cuts(seq)) assert.deepEqual(values(await run(seq, size)), wantSeq, `cut at ${JSON.stringify(size)}`);
  });

  it("says where each record starts: its line and its byte", async () => {
    const text = '[\n  {"id": 1},\n  "two\\n",\n\n    3, {"x":\n"y"}\n]';
    const r = await run(text, 3);
    const at = (needle: string) => ({ line: text.slice(0, text.indexOf(needle)).split("\n").length, byte: text.indexOf(needle) });
    assert.deepEqual(
      r.frames.map((f) => ({ line: f.line, byte: f.byte })),
      [at('{"id"'), at('"two'), at("3,"), at('{"x"')],
    );
    assert.deepEqual(at("3,"), { line: 5, byte: 31 });
  });

  it("counts bytes, not characters, and skips a UTF-8 byte order mark", async () => {
    // The mark must come whole in the first chunk, as it does from any file, socket or gunzip.
    const text = '\ufeff["é", "😀", {"k": "ü"}]';
    const r = await run(text, 3);
    assert.deepEqual(values(r), ["é", "😀", { k: "ü" }]);
    assert.deepEqual(
      r.frames.map((f) => f.byte),
      [4, 10, 18],
    );
  });

  it("turns a bad element into one bad frame and reads on", async () => {
    const r = await run('[{"a": 1}, {"a": }, [1,], {"b": 2}, tru, 01]', 4);
    assert.equal(r.error, undefined);
    assert.deepEqual(values(r), [{ a: 1 }, "!invalid json", "!invalid json", { b: 2 }, "!invalid json", "!invalid json"]);
    const bad = r.frames[1]!;
    assert.ok(!bad.ok && bad.byte === 11 && bad.line === 1);
  });

  it("ends with an error that says where when the structure is broken, after the good frames", async () => {
    const cases: Array<[string, Partial<JsonFrameOptions>, string, RegExp, number]> = [
      ["", {}, "invalid json", /input is empty at line 1, byte 0/, 0],
      [" \n ", {}, "invalid json", /input is empty at line 2, byte 3/, 0],
      ["[1, 2", {}, "truncated", /value opened at line 1, byte 4 is not closed/, 1],
      ["[1, 2,\n", {}, "truncated", /document is not closed/, 2],
      ['[{"a": "]', {}, "truncated", /value opened at line 1, byte 1 is not closed/, 0],
      ['[{"a": 1}\n}', {}, "invalid json", /expected ',' or '\]' at line 2, byte 10/, 1],
      ["[1, 2] 3", {}, "invalid json", /data after the end of the document at line 1, byte 7/, 2],
      ["[1 2]", {}, "invalid json", /expected ',' or '\]' at line 1, byte 3/, 1],
      ["[,1]", {}, "invalid json", /unexpected "," at line 1, byte 1/, 0],
      ["<html>", {}, "invalid json", /unexpected "<" at line 1, byte 0/, 0],
      ["[1,]", {}, "invalid json", /unexpected "\]" at line 1, byte 3/, 1],
      ["[1, x]", { field: "v" }, "invalid json", /expected '\{' at line 1, byte 0/, 0],
      ['{"n": 1}', { field: "v" }, "invalid json", /no "v" array/, 0],
      ['{"v": {}}', { field: "v" }, "invalid json", /"v" is not an array at line 1, byte 6/, 0],
      ["{1: 2}", { field: "v" }, "invalid json", /expected a key at line 1, byte 1/, 0],
      ['{"a" 1}', { field: "v" }, "invalid json", /expected ':' at line 1, byte 5/, 0],
      ['{"v": [1] "b": 2}', { field: "v" }, "invalid json", /expected ',' or '\}' at line 1, byte 10/, 1],
      ['{"a": tru, "v": []}', { field: "v" }, "invalid json", /"a" at line 1, byte 6 is not valid JSON/, 0],
      ['{"v": [1, 2]', { field: "v" }, "truncated", /document is not closed/, 2],
    ];
    for (const [text, opts, reason, message, good] of cases) {
      for (const size of [1, 1000]) {
        const r = await run(text, size, opts);
        const what = `${JSON.stringify(text)} in chunks of ${size}: ${r.error?.message}`;
        assert.equal(r.error?.reason, reason, what);
        assert.match(r.error.message, message, what);
        assert.match(r.error.message, /^test: /, "the label comes first");
        assert.equal(r.frames.filter((f) => f.ok).length, good, what);
      }
    }
  });

  it("turns an element over the limit into a 'too large' frame without holding it, and reads on", async () => {
    const max = 50;
    const fits = JSON.stringify({ s: "x".repeat(max - 8) });
    const over = JSON.stringify({ s: "y".repeat(max - 7) });
    assert.equal([Buffer.byteLength(fits), Buffer.byteLength(over)].join(), `${max},${max + 1}`);
    const huge = JSON.stringify({ s: "z".repeat(10_000) });
    for (const size of [1, 7, 10_000]) {
      const r = await run(`[${fits}, ${over}, ${huge}, "${"s".repeat(max)}", 1]`, size, { maxValueBytes: max });
      assert.deepEqual(values(r), [JSON.parse(fits), "!too large", "!too large", "!too large", 1], `chunks of ${size}`);
      const tooLarge = r.frames[1]!;
      assert.ok(!tooLarge.ok && tooLarge.detail === `${max + 1} bytes (limit ${max})`, JSON.stringify(tooLarge));
    }
  });

  it("skips a header field over 64 KiB instead of keeping it", async () => {
    const big = "b".repeat(MAX_META_BYTES);
    const r = await run(`{"title": "t", "big": "${big}", "list": [${"1,".repeat(MAX_META_BYTES / 2)}1], "v": [1], "after": 2}`, 4096, { field: "v" });
    assert.equal(r.error, undefined);
    assert.deepEqual(values(r), [1]);
    assert.deepEqual(r.meta, { title: "t", after: 2 });
  });
});
