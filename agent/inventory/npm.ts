/**
 * npm packages, one `package.json` per installed package directory. Only manifests directly in a
 * package directory under `node_modules` count (`node_modules/<name>/package.json`,
 * `node_modules/@scope/<name>/package.json`, nested `node_modules` and pnpm's
 * `node_modules/.pnpm/<id>/node_modules/<name>` included): the application's own root
 * `package.json` describes code that was not installed from a registry, and `package.json` files
 * deeper inside a package (`dist/package.json` holding `{"type":"module"}`) are not packages.
 */
import type { FileParse } from "./package-record.js";

/** True for `…/node_modules/<name>/package.json` and `…/node_modules/@scope/<name>/package.json`. */
export function isNodeModulesManifest(path: string): boolean {
  const parts = path.split("/");
  const n = parts.length;
  if (parts[n - 1] !== "package.json" || n < 3) return false;
  const pkg = parts[n - 2] ?? "";
  if (pkg === "" || pkg.startsWith(".") || pkg.startsWith("@")) return false;
  if (parts[n - 3] === "node_modules") return true;
  const scope = parts[n - 3] ?? "";
  return n >= 4 && scope.startsWith("@") && scope.length > 1 && parts[n - 4] === "node_modules";
}

/**
 * A package.json with a string `name` and `version` is a package; one without them (a stub some
 * packages ship) is not, and is no problem. Text that is not a JSON object is a problem.
 */
export function parsePackageJson(text: string): FileParse {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { problem: `not JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return { problem: "not a JSON object" };
  const o = doc as Record<string, unknown>;
  const name = o["name"];
  const version = o["version"];
  if (typeof name !== "string" || typeof version !== "string") return {};
  const n = name.trim();
  const v = version.trim();
  if (n === "" || v === "" || /\s/.test(n) || /\s/.test(v)) return {};
  return { pkg: { type: "npm", name: n, version: v } };
}
