/**
 * Transparent gunzip by magic number: feeds come both ways (EPSS is published as .csv.gz, a
 * mirror may serve any of them compressed), and the URL or file name does not always say which.
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { errnoCode } from "../../../common/errors.js";
import { FeedFormatError } from "../parse/types.js";

/**
 * The bytes of `input`, gunzipped if they start with the gzip magic (1f 8b), else as they come.
 * A corrupt or cut gzip stream ends the iteration with a FeedFormatError ("invalid gzip",
 * "truncated"). Breaking out of the iteration destroys `input`.
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
      const code = errnoCode(err) ?? "";
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
