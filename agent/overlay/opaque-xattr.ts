/**
 * Whether a layer directory carries overlayfs's opaque xattr (`trusted.overlay.opaque=y`, or
 * `user.overlay.opaque=y` for rootless overlays), read with libc's lgetxattr through koffi: no
 * process is spawned, and a read costs one system call per name.
 */
import { Code, ShadowError } from "../../common/errors.js";
import { libcFunction } from "../runtime/libc.js";

/**
 * Tells whether the directory at an absolute path is opaque. Throws FailedPrecondition when this
 * host cannot read xattrs at all (koffi or the C library cannot be loaded, e.g. on musl).
 */
export type OpaqueXattrReader = (absDir: string) => boolean;

const OPAQUE_NAMES = ["trusted.overlay.opaque", "user.overlay.opaque"] as const;
const Y = 0x79;

type Lgetxattr = (path: string, name: string, value: Buffer, size: number) => number;

function loadLgetxattr(library: string): Lgetxattr | ShadowError {
  try {
    return libcFunction<Lgetxattr>("long lgetxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)", library);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return new ShadowError(Code.FailedPrecondition, `cannot read overlay xattrs: ${library} cannot be loaded through koffi (${why})`, { cause: err });
  }
}

const loaded = new Map<string, Lgetxattr | ShadowError>();

/** The reader over `library` (glibc's by default), loaded once per library. */
export function libcOpaqueXattrReader(library = "libc.so.6"): OpaqueXattrReader {
  // Two bytes: a longer value than "y" then reads as 2 or fails with ERANGE, either way not opaque.
  const buf = Buffer.alloc(2);
  return (absDir) => {
    let fn = loaded.get(library);
    if (fn === undefined) loaded.set(library, (fn = loadLgetxattr(library)));
    if (fn instanceof ShadowError) throw fn;
    const lgetxattr = fn;
    // -1 is ENODATA (no such attribute) or a path that vanished or cannot hold xattrs: not opaque.
    return OPAQUE_NAMES.some((name) => lgetxattr(absDir, name, buf, buf.length) === 1 && buf[0] === Y);
  };
}

/** The reader every overlay lookup uses unless told otherwise. */
export const readOpaqueXattr: OpaqueXattrReader = libcOpaqueXattrReader();
