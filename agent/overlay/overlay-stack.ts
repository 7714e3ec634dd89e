/**
 * The one model of overlayfs this agent has: which layer of a stack provides a path, and whether
 * a higher layer hides it. The LDG asks it which layer a process's executable comes from, the
 * inventory which layer's copy of a package database an image ends up with.
 *
 * The view of a path at layer L is the entry in the highest layer <= L that has it, unless a layer
 * in between hides the lower ones: a whiteout (a 0/0 character device, or an AUFS-style
 * `.wh.<name>` file) at the path or at one of its parents, a parent that is not a directory
 * there, or an opaque parent directory (xattr `trusted.overlay.opaque=y` / `user.overlay.opaque=y`,
 * or a `.wh..wh..opq` file in it). Layer directories are read as they are on disk, not through a
 * mount; redirect_dir and metacopy, which Docker's layers do not use, are not followed.
 */
import { readlinkSync } from "node:fs";
import { imageRel } from "./image-path.js";
import { LayerDir, type XattrProblem } from "./layer-dir.js";
import { readOpaqueXattr, type OpaqueXattrReader } from "./opaque-xattr.js";
import { walkInRoot, type RootEntry } from "./walk-in-root.js";

/** The layer (index, bottom = 0) whose entry a view shows, and what that entry is. */
export interface Provider {
  layer: number;
  kind: "file" | "symlink" | "dir" | "other";
}

const ABSENT: RootEntry = { kind: "absent" };
const DIR: RootEntry = { kind: "dir" };
const OTHER: RootEntry = { kind: "other" };

export class OverlayStack {
  /** The layers, bottom first. */
  readonly layers: readonly LayerDir[];
  /**
   * By layer, the first opaque flag it could not read where that could have hidden a file;
   * those directories were taken as not opaque.
   */
  readonly xattrProblems = new Map<number, XattrProblem>();
  private readonly viewCache = new Map<string, readonly (Provider | null)[]>();

  /** `dirsBottomFirst`: each layer's own directory; `readXattr`: tests replace it. */
  constructor(dirsBottomFirst: readonly string[], readXattr: OpaqueXattrReader = readOpaqueXattr) {
    this.layers = dirsBottomFirst.map((d) => new LayerDir(d, readXattr));
  }

  /** The view of `path` at every layer, bottom first: the layer providing it there, or null (absent or hidden). */
  views(path: string): readonly (Provider | null)[] {
    const rel = imageRel(path);
    const hit = this.viewCache.get(rel);
    if (hit !== undefined) return hit;
    const out: (Provider | null)[] = [];
    let cur: Provider | null = null;
    // Some lower layer has an entry here / a file or symlink here (what the callers look up).
    let belowEntry = false;
    let belowFile = false;
    this.layers.forEach((layer, L) => {
      const s = layer.state(rel);
      if (s.s === "masked") cur = null;
      else if (s.s === "absent") {
        if (belowEntry) {
          // Every flag is read (not only up to the first opaque one), so an unreadable xattr is
          // reported wherever it could have hidden a file.
          let opaque = false;
          for (const d of s.dirs) {
            const o = layer.isOpaque(d);
            if (o === true) opaque = true;
            else if (o !== false && belowFile && !this.xattrProblems.has(L)) this.xattrProblems.set(L, o);
          }
          if (opaque) cur = null;
        }
      } else {
        cur = { layer: L, kind: s.s };
        belowEntry = true;
        if (s.s === "file" || s.s === "symlink") belowFile = true;
      }
      out.push(cur);
    });
    this.viewCache.set(rel, out);
    return out;
  }

  /** The layer providing `path` at the top of the stack (the merged view), or null. */
  provider(path: string): Provider | null {
    return this.views(path)[this.layers.length - 1] ?? null;
  }

  /**
   * As `provider`, after following symlinks through the merged view the way the kernel's path walk
   * does (`bin -> usr/bin` in a usrmerged image), with RESOLVE_IN_ROOT's rules: never out of the
   * image, whatever the link says. The last component is not followed: a symlink there is what
   * provides the path.
   */
  locate(path: string): { rel: string; provider: Provider } | undefined {
    const end = walkInRoot(path, (rel) => this.entryAt(rel), false);
    if (end === undefined || end.last.kind === "absent") return undefined;
    const provider = this.provider(end.rel);
    return provider === null ? undefined : { rel: end.rel, provider };
  }

  /** The merged view's entry at `rel`, as the walk needs it. */
  private entryAt(rel: string): RootEntry {
    const p = this.provider(rel);
    if (p === null) return ABSENT;
    if (p.kind === "dir") return DIR;
    if (p.kind !== "symlink") return OTHER;
    try {
      return { kind: "symlink", target: readlinkSync(this.layers[p.layer]?.abs(rel) ?? "") };
    } catch {
      return ABSENT;
    }
  }
}
