/**
 * CRC-64 with the ISO 3309 polynomial, as Go's hash/crc64 (crc64.MakeTable(crc64.ISO)) computes
 * it: tar-split records each file of a layer with this checksum, so it names which files of a
 * layer on disk are no longer what the layer held. Two 32-bit halves keep it off BigInt.
 */
const POLY_HI = 0xd8000000;

const TABLE_HI = new Uint32Array(256);
const TABLE_LO = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let k = 0; k < 8; k++) {
    const odd = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (odd) hi = (hi ^ POLY_HI) >>> 0;
  }
  TABLE_HI[i] = hi;
  TABLE_LO[i] = lo;
}

/** A running checksum; `digest()` gives the 8 bytes big-endian, as Go's Sum(nil). */
export class Crc64Iso {
  private hi = 0xffffffff;
  private lo = 0xffffffff;

  update(b: Uint8Array): this {
    let hi = this.hi;
    let lo = this.lo;
    for (let i = 0; i < b.length; i++) {
      const idx = (lo ^ (b[i] ?? 0)) & 0xff;
      const nlo = ((lo >>> 8) | ((hi & 0xff) << 24)) >>> 0;
      hi = ((hi >>> 8) ^ (TABLE_HI[idx] ?? 0)) >>> 0;
      lo = (nlo ^ (TABLE_LO[idx] ?? 0)) >>> 0;
    }
    this.hi = hi;
    this.lo = lo;
    return this;
  }

  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((~this.hi) >>> 0, 0);
    out.writeUInt32BE((~this.lo) >>> 0, 4);
    return out;
  }
}
