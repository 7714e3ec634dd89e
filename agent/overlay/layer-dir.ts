/**
 * One layer's own directory (overlay2/<cacheId>/diff, or a container's upper dir) and what it
 * says about a path: holds it, hides lower layers' copies of it, or neither. Every lstat and
 * opaque flag is cached, since the same parents are asked about again and again; make a new
 * one to see a directory that changes (a running container's upper dir).
 */
import { ShadowError } from "../../common/errors.js";
import { entryKindAt, OPAQUE_MARKER, WHITEOUT_PREFIX, type EntryKind } from "./entry-kind.js";
import type { OpaqueXattrReader } from "./opaque-xattr.js";

/**
 * A path in one layer: an entry (file, symlink, directory, anything else), a mask that hides
 * lower layers' copies (a whiteout at the path or a parent, a parent that is not a directory
 * here), or absent (then `dirs` are its parents this layer has, whose opaque flags matter).
 */
export type PathState =
  | { s: "file" | "symlink" | "dir" | "other" }
  | { s: "masked" }
  | { s: "absent"; dirs: string[] };

const MASKED: PathState = { s: "masked" };
const ENTRY: Record<"file" | "symlink" | "dir" | "other", PathState> = {
  file: { s: "file" },
  symlink: { s: "symlink" },
  dir: { s: "dir" },
  other: { s: "other" },
};

/** An opaque flag that could not be read: the directory and why. */
export interface XattrProblem {
  rel: string;
  reason: string;
}

export class LayerDir {
  private readonly kinds = new Map<string, EntryKind>();
  private readonly opaque = new Map<string, boolean | XattrProblem>();

  readonly dir: string;

  constructor(
    dir: string,
    private readonly readXattr: OpaqueXattrReader,
  ) {
    this.dir = dir.replace(/\/+$/, "");
  }

  /** The absolute path of `rel` (relative to the layer's root, no leading slash). */
  abs(rel: string): string {
    return rel === "" ? this.dir : `${this.dir}/${rel}`;
  }

  /** The entry at `rel`; the caller has checked that every parent of `rel` is a real directory here. */
  kind(rel: string): EntryKind {
    let k = this.kinds.get(rel);
    if (k === undefined) this.kinds.set(rel, (k = entryKindAt(this.abs(rel))));
    return k;
  }

  /**
   * Walks `rel` from the layer's root one component at a time, so that a symlinked parent is
   * seen (and never followed, out of the layer or to the host's own files).
   */
  state(rel: string): PathState {
    const parts = rel.split("/");
    const dirs: string[] = [];
    let prefix = "";
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i] ?? "";
      const parent = prefix;
      prefix = parent === "" ? name : `${parent}/${name}`;
      const k = this.kind(prefix);
      if (k === "absent") {
        if (this.kind(parent === "" ? `${WHITEOUT_PREFIX}${name}` : `${parent}/${WHITEOUT_PREFIX}${name}`) !== "absent") return MASKED;
        return { s: "absent", dirs };
      }
      if (k === "whiteout") return MASKED;
      if (i === parts.length - 1) return ENTRY[k];
      if (k !== "dir") return MASKED;
      dirs.push(prefix);
    }
    return MASKED;
  }

  /**
   * `rel`, a directory of this layer, hides what lower layers hold below it: the marker file in
   * it, else the xattr. An xattr this host cannot read is answered with the problem; the caller
   * then takes the directory as not opaque.
   */
  isOpaque(rel: string): boolean | XattrProblem {
    let o = this.opaque.get(rel);
    if (o !== undefined) return o;
    if (this.kind(`${rel}/${OPAQUE_MARKER}`) !== "absent") o = true;
    else {
      try {
        o = this.readXattr(this.abs(rel));
      } catch (err) {
        o = { rel, reason: ShadowError.from(err).message };
      }
    }
    this.opaque.set(rel, o);
    return o;
  }
}
