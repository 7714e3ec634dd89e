/**
 * Bytes into one entry of a tar being packed (tar-stream's entry sink, a streamx writable):
 * written as they come, waiting whenever the pack asks to (a layer never sits in memory whole).
 */
import type { Writable } from "node:stream";

export async function copyIntoEntry(sink: Writable, source: AsyncIterable<Buffer>): Promise<void> {
  const done = new Promise<void>((resolve, reject) => {
    sink.once("error", reject);
    sink.once("finish", () => resolve());
    sink.once("close", () => resolve());
  });
  for await (const chunk of source) {
    if (!sink.write(chunk)) await new Promise<void>((r) => sink.once("drain", () => r()));
  }
  sink.end();
  await done;
}
