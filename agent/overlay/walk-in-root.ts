/**
 * A path walk that never leaves a root, the way openat2(2) with RESOLVE_IN_ROOT walks: an
 * absolute symlink starts again at the root, ".." at the root stays there, and at most 40
 * symlinks are followed (the kernel's MAXSYMLINKS). What is at each path comes from the caller
 * (a merged view of image layers, or a live directory), so the same walk serves both.
 */

/** What the caller sees at one path (relative to the root, no leading slash, every parent real). */
export type RootEntry = { kind: "dir" } | { kind: "symlink"; target: string } | { kind: "other" } | { kind: "absent" };

/** The kernel's limit on symlinks followed in one lookup (ELOOP past it). */
export const MAX_SYMLINKS = 40;

/** Where a walk ended: the path with every symlink resolved, and what is there (absent: only the last component is missing). */
export interface WalkEnd {
  rel: string;
  last: RootEntry;
}

/**
 * Resolves `path` (absolute or relative to the root) inside the root. A symlink as the last
 * component is followed only when `followLast`. Undefined when the walk fails as the kernel's
 * would: a missing or non-directory parent, an empty symlink, or too many symlinks.
 */
export function walkInRoot(path: string, entryAt: (rel: string) => RootEntry, followLast: boolean): WalkEnd | undefined {
  /** Components still to walk, the next one last (a stack, so a symlink's target is pushed on top). */
  const todo = path.split("/").reverse();
  const done: string[] = [];
  let links = 0;
  for (;;) {
    const name = todo.pop();
    if (name === undefined) return { rel: done.join("/"), last: { kind: "dir" } };
    if (name === "" || name === ".") continue;
    if (name === "..") {
      done.pop();
      continue;
    }
    const rel = done.length === 0 ? name : `${done.join("/")}/${name}`;
    const isLast = todo.every((n) => n === "" || n === ".");
    const e = entryAt(rel);
    if (e.kind === "symlink" && (followLast || !isLast)) {
      if (++links > MAX_SYMLINKS || e.target === "") return undefined;
      if (e.target.startsWith("/")) done.length = 0;
      for (const n of e.target.split("/").reverse()) todo.push(n);
      continue;
    }
    if (e.kind === "dir") {
      done.push(name);
      continue;
    }
    if (!isLast) return undefined;
    return { rel, last: e };
  }
}
