/**
 * A small tmpfs for one describe block (mounted before its tests, unmounted after them; tests run
 * as root), and a filler file that takes its free space, for disk-full tests.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, open, rm, statfs, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";

export interface SmallTmpfs {
  readonly path: string;
  /** Takes all the free space but `leave` bytes, in one filler file. */
  fill(leave: number): Promise<void>;
  /** Removes the filler: the space is back. */
  free(): Promise<void>;
}

export function smallTmpfs(prefix: string, size: string): SmallTmpfs {
  let dir: string | undefined;
  let mounted = false;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir]);
    mounted = true;
  });
  after(async () => {
    if (dir === undefined) return;
    // Lazy: the block's own after() (registered later, so run later) may still have files open on it.
    if (mounted) execFileSync("umount", ["--lazy", dir]);
    await rm(dir, { recursive: true, force: true });
  });
  const path = (): string => {
    if (dir === undefined) throw new Error(`tmpfs ${prefix} used outside its tests`);
    return dir;
  };
  return {
    get path() {
      return path();
    },
    async fill(leave) {
      const s = await statfs(path());
      const fh = await open(join(path(), "filler"), "w");
      try {
        await fh.write(new Uint8Array(Math.max(0, s.bavail * s.bsize - leave)));
      } finally {
        await fh.close();
      }
    },
    free: () => unlink(join(path(), "filler")),
  };
}
