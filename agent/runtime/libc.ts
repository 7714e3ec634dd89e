/**
 * C library functions through koffi, for the few system calls Node has no binding for (lgetxattr,
 * openat2, clock_gettime, netlink sockets). koffi and each library are loaded once, on first use,
 * so a host without koffi's native part (or without glibc) still runs everything else; each
 * caller says what it falls back to.
 */
import { createRequire } from "node:module";
import type * as Koffi from "koffi";

let koffi: typeof Koffi | undefined;
const libraries = new Map<string, Koffi.LibraryHandle>();

function koffiModule(): typeof Koffi {
  koffi ??= createRequire(import.meta.url)("koffi") as typeof Koffi;
  return koffi;
}

/** The function `signature` declares, from `library` (glibc's by default); throws when it cannot be loaded. */
export function libcFunction<F>(signature: string, library = "libc.so.6"): F {
  const k = koffiModule();
  let lib = libraries.get(library);
  if (lib === undefined) libraries.set(library, (lib = k.load(library)));
  return lib.func(signature) as F;
}

/** As libcFunction, or null where it cannot be loaded (the caller then takes its fallback). */
export function libcFunctionOrNull<F>(signature: string, library?: string): F | null {
  try {
    return libcFunction<F>(signature, library);
  } catch {
    return null;
  }
}

/** errno as the last call through koffi left it. */
export function libcErrno(): number {
  return koffiModule().errno();
}
