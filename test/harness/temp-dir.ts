/**
 * A temp directory for one describe block: made before its tests, removed after them.
 * `tempDir("sl-x-").path` is valid inside the tests (not at describe time).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";

export function tempDir(prefix: string): { readonly path: string } {
  let dir: string | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  after(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  return {
    get path(): string {
      if (dir === undefined) throw new Error(`temp dir ${prefix} used outside its tests`);
      return dir;
    },
  };
}
