/** Lines: LF and CRLF wherever the chunks fall, UTF-8 kept whole, over-long lines dropped but counted. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Line, lines } from "../../../aggregator/feeds/decode/line-splitter.js";
import { chunks, drain } from "./byte-source.js";

const split = async (text: string | Buffer, size: number | number[], max = 1024): Promise<Line[]> =>
  drain(lines(chunks(typeof text === "string" ? Buffer.from(text) : text, size), max));
const texts = (ls: Line[]): Array<string | null> => ls.map((l) => l.text);

describe("line splitter", () => {
  it("splits at LF and drops the CR of a CRLF, numbering lines from 1", async () => {
    const got = await split("a,b\r\nc,d\n\r\nlast", 100);
    assert.deepEqual(got, [
      { line: 1, text: "a,b" },
      { line: 2, text: "c,d" },
      { line: 3, text: "" },
      { line: 4, text: "last" },
    ]);
  });

  it("keeps a CR that does not end the line", async () => {
    assert.deepEqual(texts(await split("a\rb\n\rc\n", 100)), ["a\rb", "\rc"]);
  });

  it("yields no line after a final LF, nothing for an empty input, one empty line for a lone LF", async () => {
    assert.deepEqual(texts(await split("x\n", 100)), ["x"]);
    assert.deepEqual(await split("", 100), []);
    assert.deepEqual(texts(await split("\n", 100)), [""]);
    assert.deepEqual(texts(await split("\n\n", 1)), ["", ""]);
  });

  it("gives the same lines wherever the chunks are cut (a CRLF split between two chunks included)", async () => {
    const text = "CVE-1,0.1\r\nCVE-2,0.2\n\nCVE-3,0.3\r\n\r\nCVE-4";
    const want = ["CVE-1,0.1", "CVE-2,0.2", "", "CVE-3,0.3", "", "CVE-4"];
    assert.equal(text.indexOf("\r\n"), 9);
    assert.deepEqual(texts(await split(text, [10])), want, "cut between CR and LF");
    for (let a = 0; a <= text.length; a++) {
      for (let b = a; b <= text.length; b += 3) assert.deepEqual(texts(await split(text, [a, b])), want, `cut at ${a}, ${b}`);
    }
    assert.deepEqual(texts(await split(text, 1)), want);
  });

  it("decodes UTF-8 once the line is whole, so characters split across chunks survive", async () => {
    const text = "naïve,😀\ncafé\n";
    const bytes = Buffer.from(text);
    for (let cut = 0; cut <= bytes.length; cut++) assert.deepEqual(texts(await split(bytes, [cut])), ["naïve,😀", "café"], `cut at ${cut}`);
    assert.deepEqual(texts(await split(bytes, 1)), ["naïve,😀", "café"]);
  });

  it("drops a line over the limit (text null) and keeps the lines around it and their numbers", async () => {
    const max = 16;
    const text = `${"a".repeat(max)}\n${"b".repeat(max + 1)}\n${"c".repeat(100)}\nok\n${"d".repeat(max + 1)}`;
    for (const size of [1, 5, 7, 1000]) {
      assert.deepEqual(
        await split(text, size, max),
        [
          { line: 1, text: "a".repeat(max) },
          { line: 2, text: null },
          { line: 3, text: null },
          { line: 4, text: "ok" },
          { line: 5, text: null },
        ],
        `chunks of ${size}`,
      );
    }
  });

  it("counts the CR of a CRLF toward the limit", async () => {
    assert.deepEqual(texts(await split(`${"x".repeat(8)}\r\n${"y".repeat(7)}\r\n`, 3, 8)), [null, "y".repeat(7)]);
  });
});
