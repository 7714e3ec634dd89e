/**
 * A read window over an open file, for readers that jump around a file but mostly move forward in
 * small steps (zip entries): ranges inside the window are served synchronously, without a trip to
 * the thread pool, and a miss reads a whole block ahead.
 */
import type { FileHandle } from "node:fs/promises";

/** The least a miss reads: large enough that an osv.dev archive's small entries are mostly hits. */
export const WINDOW_BLOCK = 1024 * 1024;

export class ReadWindow {
  private buf: Buffer = Buffer.alloc(0);
  private start = 0;

  constructor(
    private readonly file: FileHandle,
    /** The file's size in bytes: reads past it fail rather than come back short. */
    readonly size: number,
  ) {}

  /** The bytes if the window holds them (a view: copy to keep). */
  sync(pos: number, len: number): Buffer | undefined {
    if (pos >= this.start && pos + len <= this.start + this.buf.length) return this.buf.subarray(pos - this.start, pos - this.start + len);
    return undefined;
  }

  /** Moves the window to start at `pos` (at least `len` bytes, a block at least) and returns them. */
  async bytes(pos: number, len: number): Promise<Buffer> {
    const hit = this.sync(pos, len);
    if (hit !== undefined) return hit;
    if (pos < 0 || pos + len > this.size) throw new Error(`bytes ${pos}-${pos + len} are outside the ${this.size}-byte file`);
    const want = Math.min(Math.max(len, WINDOW_BLOCK), this.size - pos);
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.file.read(buf, got, want - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < len) throw new Error(`unexpected end of file at byte ${pos + got}`);
    this.buf = buf.subarray(0, got);
    this.start = pos;
    return this.buf.subarray(0, len);
  }
}
