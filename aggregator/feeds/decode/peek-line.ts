/** A look at the first line of a stream before choosing how to read it (JSON lines or one document). */

/**
 * The first line of `bytes` (without its LF, cut at `max` bytes) and the whole stream again from
 * its first byte. Only what was read to find the line is held. Returning early from the replay
 * closes `bytes`.
 */
export async function peekLine(
  bytes: AsyncIterable<Buffer>,
  max = 64 * 1024,
): Promise<{ first: string; bytes: AsyncGenerator<Buffer> }> {
  const it = bytes[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let size = 0;
  let ended = false;
  let nl = -1;
  while (nl === -1 && size < max) {
    const r = await it.next();
    if (r.done === true) {
      ended = true;
      break;
    }
    nl = r.value.indexOf(0x0a);
    if (nl !== -1) nl += size;
    head.push(r.value);
    size += r.value.length;
  }
  const all = Buffer.concat(head);
  const first = all.toString("utf8", 0, Math.min(nl === -1 ? all.length : nl, max));
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      if (all.length > 0) yield all;
      if (!ended) for (let r = await it.next(); r.done !== true; r = await it.next()) yield r.value;
    } finally {
      await it.return?.();
    }
  }
  return { first, bytes: replay() };
}
