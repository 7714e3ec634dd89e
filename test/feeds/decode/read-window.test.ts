/** The read window: hits served from memory, misses read a block ahead, no read past the file. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ReadWindow, WINDOW_BLOCK } from "../../../aggregator/feeds/decode/read-window.js";

describe("read window", () => {
  let dir = "";
  let path = "";
  const data = Buffer.alloc(2 * WINDOW_BLOCK + 1000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "shadowlayer-window-test-"));
    path = join(dir, "data");
    writeFileSync(path, data);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("reads a block ahead on a miss and serves what it holds without reading again", async () => {
    const file = await open(path);
    try {
      const win = new ReadWindow(file, data.length);
      assert.equal(win.sync(0, 1), undefined, "empty at first");
      assert.deepEqual(await win.bytes(100, 10), data.subarray(100, 110));
      assert.deepEqual(win.sync(100 + WINDOW_BLOCK - 10, 10), data.subarray(100 + WINDOW_BLOCK - 10, 100 + WINDOW_BLOCK));
      assert.equal(win.sync(100 + WINDOW_BLOCK - 10, 11), undefined, "one byte past the block");
      assert.equal(win.sync(99, 2), undefined, "one byte before it");
      assert.deepEqual(await win.bytes(0, data.length), data, "a range larger than a block is read whole");
      assert.deepEqual(win.sync(data.length - 5, 5), data.subarray(data.length - 5));
    } finally {
      await file.close();
    }
  });

  it("refuses ranges outside the file, and a file shorter than its stated size", async () => {
    const file = await open(path);
    try {
      const win = new ReadWindow(file, data.length);
      await assert.rejects(win.bytes(data.length - 4, 5), /outside the \d+-byte file/);
      await assert.rejects(win.bytes(-1, 5), /outside/);
      const lying = new ReadWindow(file, data.length + 100);
      await assert.rejects(lying.bytes(data.length - 10, 50), new RegExp(`unexpected end of file at byte ${data.length}`));
    } finally {
      await file.close();
    }
  });
});
