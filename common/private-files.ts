/**
 * What only the owner may read: the data dir, the aggregator's store, the agent's state (its spool
 * holds argv and paths), endpoint.json. Made so when created, and tightened when found looser.
 */
import { chmod, mkdir, open, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { errnoCode } from "./errors.js";
import type { Logger } from "./log.js";

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const GROUP_OR_OTHER = 0o077;
const STICKY = 0o1000;

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`;

/**
 * Makes `dir` (and any missing parent) 0700, or tightens it to 0700, saying so in the log. A
 * sticky directory (a shared one such as /tmp given as the data dir) or another user's is left
 * as it is, with a warning: what lives in it is private on its own (0700 directories, 0600 files).
 */
export async function privateDir(dir: string, log: Logger): Promise<void> {
  // The first directory mkdir made, if it made any: those are ours, and a default ACL or an odd
  // file system may still have given them more than the mode asked for. Tightened without a
  // warning, since nothing was ever in them.
  const made = await mkdir(dir, { recursive: true, mode: DIR_MODE });
  const { mode } = await stat(dir);
  if ((mode & GROUP_OR_OTHER) === 0) return;
  if (made !== undefined && (mode & STICKY) === 0) {
    await chmod(dir, DIR_MODE);
    return;
  }
  if ((mode & STICKY) !== 0) {
    log.warn({ dir, mode: octal(mode) }, "shared directory left as it is (give shadowlayer a directory of its own)");
    return;
  }
  try {
    await chmod(dir, DIR_MODE);
  } catch (err) {
    // Another user's directory: what this program makes inside it is still private.
    if (errnoCode(err) !== "EPERM") throw err;
    log.warn({ dir, mode: octal(mode) }, "directory open to other users and not ours to tighten");
    return;
  }
  log.warn({ dir, was: octal(mode) }, "directory was open to other users: tightened to 0700");
}

/**
 * Sets the files directly in a level directory to 0600; answers how many it changed. LevelDB
 * makes its files with the process umask (0644 usually), and makes new ones at any time (a .log
 * at each open, .ldb tables during compaction), so a pass like this one cannot keep up: the 0700
 * directory around them is what keeps other users out, since none of them can enter it. This
 * pass is for the files as they sit, should the directory be copied or loosened.
 */
async function tightenFiles(dir: string): Promise<number> {
  let changed = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(dir, e.name);
    try {
      if (((await stat(p)).mode & GROUP_OR_OTHER) === 0) continue;
      await chmod(p, FILE_MODE);
      changed++;
    } catch (err) {
      // Compaction removed it meanwhile.
      if (errnoCode(err) !== "ENOENT") throw err;
    }
  }
  return changed;
}

/** Opens a level directory with `openDb` inside a 0700 directory, its files 0600 before and after. */
export async function openPrivateLevel<T>(dir: string, log: Logger, openDb: () => Promise<T>): Promise<T> {
  await privateDir(dir, log);
  const loose = await tightenFiles(dir);
  if (loose > 0) log.warn({ dir, files: loose }, "level files were open to other users: tightened to 0600");
  const db = await openDb();
  await tightenFiles(dir);
  return db;
}

/** Writes `text` to `path`, 0600 whether the file is new or was there looser. */
export async function writePrivateFile(path: string, text: string): Promise<void> {
  const fh = await open(path, "w", FILE_MODE);
  try {
    await fh.chmod(FILE_MODE);
    await fh.writeFile(text);
  } finally {
    await fh.close();
  }
}
