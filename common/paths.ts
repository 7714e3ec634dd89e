import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The package root (this file is compiled to dist/common/paths.js). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The .proto sources, shipped with the package for server reflection. */
export const PROTO_DIR = resolve(PACKAGE_ROOT, "proto");
