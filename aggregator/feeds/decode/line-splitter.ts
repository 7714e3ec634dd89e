/** Lines of a byte stream (EPSS CSV, JSON lines), one at a time and each bounded in size. */

/** One line without its terminator (LF or CRLF); `text` is null when the line was over the limit. */
export interface Line {
  /** 1-based. */
  line: number;
  text: string | null;
}

/**
 * Splits `bytes` at LF, dropping a CR before it (a CRLF split across chunks included). A line of
 * more than `maxBytes` (its CR counted) is not kept: its bytes are dropped as they come and it is
 * yielded with `text: null`, so one runaway line costs no memory and the lines after it still
 * count. A last line without a terminator is yielded; an empty input yields nothing. Bytes are
 * decoded as UTF-8 only once a line is whole, so a character split across chunks stays whole.
 */
export async function* lines(bytes: AsyncIterable<Buffer>, maxBytes: number): AsyncGenerator<Line> {
  let parts: Buffer[] = [];
  let size = 0;
  let over = false;
  let line = 0;
  const finish = (): Line => {
    line++;
    let text: string | null = null;
    if (!over) {
      const buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      text = buf.toString("utf8", 0, buf.length > 0 && buf[buf.length - 1] === 0x0d ? buf.length - 1 : buf.length);
    }
    parts = [];
    size = 0;
    over = false;
    return { line, text };
  };
  const add = (b: Buffer): void => {
    size += b.length;
    if (size > maxBytes) {
      over = true;
      parts = [];
    } else if (!over) parts.push(b);
  };
  for await (const chunk of bytes) {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      add(chunk.subarray(from, nl));
      yield finish();
      from = nl + 1;
    }
    if (from < chunk.length) add(chunk.subarray(from));
  }
  if (size > 0) yield finish();
}
