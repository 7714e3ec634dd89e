/**
 * What one layer directory holds at one path, as overlayfs reads it. overlay2 stores a whiteout
 * as a 0/0 character device; layers unpacked from a tar by other tools keep AUFS-style
 * `.wh.<name>` files instead, and `.wh..wh..opq` in a directory in place of the opaque xattr.
 */
import { lstatSync } from "node:fs";

export type EntryKind = "dir" | "file" | "symlink" | "whiteout" | "other" | "absent";

/** AUFS-style whiteout of `name`, kept next to it. */
export const WHITEOUT_PREFIX = ".wh.";
/** AUFS-style marker that makes its directory opaque. */
export const OPAQUE_MARKER = ".wh..wh..opq";

/** The kind of entry at `abs`, without following a symlink there. */
export function entryKindAt(abs: string): EntryKind {
  try {
    // Most layers do not hold the path: asking for undefined avoids building an ENOENT error.
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (st === undefined) return "absent";
    if (st.isDirectory()) return "dir";
    if (st.isFile()) return "file";
    if (st.isSymbolicLink()) return "symlink";
    if (st.isCharacterDevice() && st.rdev === 0) return "whiteout";
    return "other";
  } catch {
    return "absent";
  }
}
