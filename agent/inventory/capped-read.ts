/** Reads a file of a layer, at most `max` bytes, never through a symlink. */
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { errnoCode } from "../../common/errors.js";

/**
 * The file's bytes, or why they cannot be had (a string, for the inventory's `partial`). A file
 * larger than `max` is not read, unless `headOnly` says its first `max` bytes are enough.
 */
export async function readCapped(abs: string, max: number, headOnly: boolean): Promise<Buffer | string> {
  let fh;
  try {
    fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    return `cannot open: ${errnoCode(err) ?? String(err)}`;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return "not a regular file";
    if (st.size > max && !headOnly) return `larger than ${max} bytes (${st.size}): not read`;
    const len = Math.min(st.size, max);
    const buf = Buffer.alloc(len);
    let off = 0;
    while (off < len) {
      const { bytesRead } = await fh.read(buf, off, len - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.subarray(0, off);
  } catch (err) {
    return `cannot read: ${errnoCode(err) ?? String(err)}`;
  } finally {
    await fh.close().catch(() => undefined);
  }
}
