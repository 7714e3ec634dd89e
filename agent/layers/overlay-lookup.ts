/**
 * Which layer provides a path. A process ran the file, so it exists in the merged view; the
 * provider is then the top-most layer holding an entry at that path that is not a whiteout
 * (overlayfs whiteouts are 0/0 character devices). Opaque directories cannot hide a file that is
 * visible, so they need no check here.
 */
import { lstatSync } from "node:fs";

export type Presence = "file" | "whiteout" | "absent";

export function presenceIn(dir: string, path: string): Presence {
  let st;
  try {
    // Most layers do not hold the path: asking for undefined avoids building an ENOENT error.
    st = lstatSync(dir + path, { throwIfNoEntry: false });
  } catch {
    return "absent";
  }
  if (st === undefined) return "absent";
  return st.isCharacterDevice() && st.rdev === 0 ? "whiteout" : "file";
}

/**
 * Index into `dirsTopFirst` of the layer providing `path`, or -1 (a whiteout on top or no layer
 * holds it).
 */
export function providingLayer(dirsTopFirst: readonly string[], path: string): number {
  for (let i = 0; i < dirsTopFirst.length; i++) {
    const p = presenceIn(dirsTopFirst[i] ?? "", path);
    if (p === "file") return i;
    if (p === "whiteout") return -1;
  }
  return -1;
}
