/** Byte sources for the decoder tests: a buffer cut into chunks, and a way to drain an iterable. */

/** `buf` in chunks of `size` bytes (the last shorter), or cut at the given offsets. */
export async function* chunks(buf: Buffer, size: number | readonly number[]): AsyncGenerator<Buffer> {
  const cuts: number[] = [];
  if (typeof size === "number") for (let i = size; i < buf.length; i += size) cuts.push(i);
  else cuts.push(...size);
  cuts.push(buf.length);
  let from = 0;
  for (const to of cuts) {
    if (to > from) yield buf.subarray(from, to);
    from = Math.max(from, to);
  }
}

export async function drain<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/**
 * A source of `count` copies of `part` (endless when omitted) that records how many it handed out
 * and whether its consumer closed it before the end.
 */
export function watched(part: Buffer, count = Infinity): { source: AsyncGenerator<Buffer>; pulled: () => number; closedEarly: () => boolean } {
  let pulled = 0;
  let closedEarly = false;
  async function* source(): AsyncGenerator<Buffer> {
    let done = false;
    try {
      for (; pulled < count; ) {
        pulled++;
        yield part;
      }
      done = true;
    } finally {
      closedEarly = !done;
    }
  }
  return { source: source(), pulled: () => pulled, closedEarly: () => closedEarly };
}
