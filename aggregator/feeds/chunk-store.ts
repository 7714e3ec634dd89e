/**
 * A feed generation's records in level, many to a value: a feed is only ever read back whole,
 * and one put per record was most of the ingest cost. The keys are the store's
 * (`keys.feedChunk`); this is what each value holds.
 */

/** Records per chunk (per level value). */
export const RECORDS_PER_CHUNK = 500;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Frame kinds: a record's source text ("R", normalised again on load), a normalised record ("N"). */
const RAW = 0x52;
const NORMALISED = 0x4e;

/** A chunk of records as one level value: frames of [1 byte kind][4 bytes length][UTF-8 JSON]. */
export class ChunkWriter {
  private parts: Uint8Array[] = [];
  private bytes = 0;
  count = 0;

  private frame(kind: number, data: Uint8Array): void {
    const head = new Uint8Array(5);
    head[0] = kind;
    new DataView(head.buffer).setUint32(1, data.length);
    this.parts.push(head, data);
    this.bytes += 5 + data.length;
    this.count++;
  }

  /** Keeps a record's source bytes as they came (no re-serialising). */
  addRaw(data: Uint8Array): void {
    this.frame(RAW, data);
  }

  addRecord(r: unknown): void {
    this.frame(NORMALISED, enc.encode(JSON.stringify(r)));
  }

  /** The chunk's bytes; the writer starts a new chunk. */
  take(): Uint8Array {
    const out = Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    this.count = 0;
    return out;
  }
}

/** The frames of one chunk, in order: `raw` for a source text, else a normalised record. */
export function* readChunk(v: Uint8Array): Generator<{ raw: boolean; text: string }> {
  const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
  let off = 0;
  while (off + 5 <= v.length) {
    const kind = v[off];
    const len = view.getUint32(off + 1);
    const text = dec.decode(v.subarray(off + 5, off + 5 + len));
    off += 5 + len;
    yield { raw: kind === RAW, text };
  }
}
