/**
 * Paths inside an image. The overlay model takes them relative to the image's root ("usr/bin/x");
 * the LDG holds them absolute, as a process inside the container sees them ("/usr/bin/x").
 */
import { posix } from "node:path";

/** `path` relative to the image's root: leading slashes dropped. */
export function imageRel(path: string): string {
  return path.replace(/^\/+/, "");
}

/** A symlink's target as a path inside the image: relative to its directory, ".." stopping at "/". */
export function resolveLinkInImage(rel: string, target: string): string | undefined {
  const joined = target.startsWith("/") ? posix.normalize(target) : posix.normalize(posix.join("/", posix.dirname(rel), target));
  const out = posix.normalize(`/${joined}`).replace(/^\/+/, "");
  return out === "" || out === "." ? undefined : out;
}
