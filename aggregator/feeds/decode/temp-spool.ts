/**
 * A stream written to a private temporary file, for formats that need random access (a zip keeps
 * its directory at the end, so a downloaded all.zip cannot be read as it arrives).
 */
import { createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

export interface Spooled {
  path: string;
  /** Deletes the file and its directory; the caller must call it. */
  remove: () => Promise<void>;
}

/**
 * Writes `bytes` to a file readable by this user only, in a fresh directory named from `prefix`
 * under the system temp directory. If the source fails, nothing is left behind and its error is
 * thrown.
 */
export async function spool(bytes: AsyncIterable<Buffer>, prefix: string): Promise<Spooled> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const remove = () => rm(dir, { recursive: true, force: true });
  const path = join(dir, "spool");
  try {
    await pipeline(Readable.from(bytes), createWriteStream(path, { mode: 0o600 }));
  } catch (err: unknown) {
    await remove();
    throw err;
  }
  return { path, remove };
}
