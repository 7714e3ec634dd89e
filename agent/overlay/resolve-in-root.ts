/**
 * Where a path inside a running container leads, resolved in the container's own root
 * (`/proc/<pid>/root`, its merged overlay with its volumes mounted) the way the kernel resolved it
 * for the container: absolute symlinks start again at the container's root, ".." stops there, and
 * nothing on the host outside that root is ever looked at. The walk through `/proc/<pid>/root/...`
 * that it replaces let the kernel follow an absolute symlink in a parent directory from the
 * agent's own root, i.e. through the host's files.
 *
 * openat2(2) with RESOLVE_IN_ROOT does it in the kernel (Linux 5.6+), called through koffi as the
 * C library has no wrapper; the path it reached is read back from /proc/self/fd. Where it cannot
 * run, and for a file that is gone (to name it), the same rules are applied one component at a
 * time with lstat and readlink.
 */
import { closeSync, constants, lstatSync, openSync, readlinkSync } from "node:fs";
import { libcErrno, libcFunctionOrNull } from "../runtime/libc.js";
import { walkInRoot, type RootEntry } from "./walk-in-root.js";

/** A path inside the root with every symlink resolved; `exists` is false when only its last component is missing. */
export interface InRootPath {
  path: string;
  exists: boolean;
}

const SYS_OPENAT2 = 437;
/** O_PATH | O_CLOEXEC where they have the generic values (the architectures the agent ships for). */
const O_PATH_CLOEXEC = 0o10000000n | 0o2000000n;
const GENERIC_FCNTL = new Set(["x64", "arm64", "riscv64"]);
const RESOLVE_NO_MAGICLINKS = 0x02n;
const RESOLVE_IN_ROOT = 0x10n;
const EPERM = 1;
const ENOENT = 2;
const EAGAIN = 11;
const ENOSYS = 38;
const DELETED = " (deleted)";

type Syscall = (nr: number, ...args: unknown[]) => number;
interface Openat2 {
  call: Syscall;
  errno: () => number;
}

let openat2: Openat2 | null | undefined;

function loadOpenat2(): Openat2 | null {
  if (!GENERIC_FCNTL.has(process.arch)) return null;
  const call = libcFunctionOrNull<Syscall>("long syscall(long number, ...)");
  return call === null ? null : { call, errno: libcErrno };
}

/** struct open_how: flags, mode, resolve (three u64). */
const how = Buffer.alloc(24);
how.writeBigUInt64LE(O_PATH_CLOEXEC, 0);
how.writeBigUInt64LE(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, 16);

/** The fd openat2 gave for `path` under `rootFd`, or the errno it failed with (negative). */
function openInRoot(o: Openat2, rootFd: number, path: string): number {
  for (let attempt = 0; ; attempt++) {
    const fd = o.call(SYS_OPENAT2, "int", rootFd, "const char *", path, "void *", how, "size_t", how.length);
    if (fd >= 0) return fd;
    const errno = o.errno();
    // EAGAIN: a rename raced with a ".." in the walk; the kernel asks to try again.
    if (errno !== EAGAIN || attempt >= 3) return -errno;
  }
}

/** The path an fd stands for, relative to `rootPath` (the root fd's own path), or undefined if outside it. */
function fdPath(fd: number, rootPath: string): string | undefined {
  let p = readlinkSync(`/proc/self/fd/${fd}`);
  if (p.endsWith(DELETED)) p = p.slice(0, -DELETED.length);
  // A root in another mount namespace (a container's) reads as "/", and its files from there.
  if (rootPath === "/") return p;
  if (p === rootPath) return "/";
  return p.startsWith(`${rootPath}/`) ? p.slice(rootPath.length) : undefined;
}

/** openat2's answer: the path, undefined when the walk fails, "missing" for ENOENT, "unavailable" when it cannot run here. */
function resolveWithOpenat2(o: Openat2, root: string, path: string): InRootPath | undefined | "missing" | "unavailable" {
  let rootFd: number;
  try {
    rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch {
    return undefined;
  }
  try {
    const fd = openInRoot(o, rootFd, path);
    if (fd === -ENOENT) return "missing";
    if (fd === -ENOSYS || fd === -EPERM) return "unavailable"; // before Linux 5.6, or refused by seccomp
    if (fd < 0) return undefined;
    try {
      const p = fdPath(fd, readlinkSync(`/proc/self/fd/${rootFd}`));
      return p === undefined ? undefined : { path: p, exists: true };
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  } finally {
    closeSync(rootFd);
  }
}

/** The same rules in user space: every parent handed to lstat has been seen to be a real directory. */
function resolveByWalk(root: string, path: string): InRootPath | undefined {
  const base = root.replace(/\/+$/, "");
  const entryAt = (rel: string): RootEntry => {
    const abs = `${base}/${rel}`;
    try {
      const st = lstatSync(abs, { throwIfNoEntry: false });
      if (st === undefined) return { kind: "absent" };
      if (st.isDirectory()) return { kind: "dir" };
      if (st.isSymbolicLink()) return { kind: "symlink", target: readlinkSync(abs) };
      return { kind: "other" };
    } catch {
      return { kind: "absent" };
    }
  };
  const end = walkInRoot(path, entryAt, true);
  return end === undefined ? undefined : { path: `/${end.rel}`, exists: end.last.kind !== "absent" };
}

/**
 * `path` (absolute inside the container, or relative to its root) resolved inside `root`, which
 * is the container's `/proc/<pid>/root` or any directory standing for a root. Undefined when the
 * kernel's walk would fail too (a missing or non-directory parent, a symlink loop) or the root
 * cannot be opened.
 */
export function resolveInRoot(root: string, path: string): InRootPath | undefined {
  if (openat2 === undefined) openat2 = loadOpenat2();
  if (openat2 !== null) {
    const r = resolveWithOpenat2(openat2, root, path);
    if (r === "unavailable") openat2 = null;
    // A file that is gone: the walk says which name it had, with its parents resolved.
    else if (r !== "missing") return r;
  }
  return resolveByWalk(root, path);
}

/** For tests: resolve with the user-space walk even where openat2 works. */
export function resolveInRootByWalk(root: string, path: string): InRootPath | undefined {
  return resolveByWalk(root, path);
}
