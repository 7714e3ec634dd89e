/**
 * A pipeline stage that passes bytes through while hashing and counting them: every layer tar
 * written to disk is checked against its diffID without being read twice.
 */
import { createHash } from "node:crypto";

export interface DigestTap {
  /** For stream/promises pipeline, between the source and the file. */
  tap: (src: AsyncIterable<Buffer>) => AsyncGenerator<Buffer>;
  /** `sha256:<hex>` of what passed (once the pipeline is done). */
  digest(): string;
  size(): number;
}

/** `max`: bytes past which the stream fails with `tooBig(max)`'s error. */
export function digestTap(max = Number.MAX_SAFE_INTEGER, tooBig?: (max: number) => Error): DigestTap {
  const h = createHash("sha256");
  let size = 0;
  return {
    async *tap(src) {
      for await (const chunk of src) {
        size += chunk.length;
        if (size > max) throw tooBig?.(max) ?? new Error(`more than ${max} bytes`);
        h.update(chunk);
        yield chunk;
      }
    },
    digest: () => `sha256:${h.digest("hex")}`,
    size: () => size,
  };
}
