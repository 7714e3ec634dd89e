/**
 * How the rebuild stage is configured (the aggregator's --builder, --registry, --recipe-root,
 * --package-mirror, --base-map, --shadows-keep, --rebuilds flags), checked before anything starts.
 */
import { Code, ShadowError } from "../../common/errors.js";
import { parseRegistryRef } from "../../common/registry-client.js";

export interface RebuildOptions {
  /** False: no job is planned (scores still say `rebuild`). */
  enabled: boolean;
  /** `--builder` specs as given (builder-config.ts parses them); none: the local engine. */
  builders: string[];
  /** The local engine's socket, for the default builder. */
  dockerSocket: string;
  /** `--registry HOST:PORT/REPO`; none: shadows stay in the builder's engine. */
  registry?: string;
  registryCa?: string;
  registryAuth?: string;
  recipeRoots: string[];
  packageMirror?: string;
  /** Old base name → newer base name (the policy mapping of bases for `rebase`). */
  baseMap: Record<string, string>;
  /** Shadows kept per source image; older ones are deleted. */
  keep: number;
  /** The signing key (PEM); default: cosign.key in the TLS directory. */
  signingKey?: string;
}

/** `OLD=NEW` pairs (repeatable --base-map) into a map; both sides image references. */
export function parseBaseMap(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf("=");
    const from = p.slice(0, eq).trim();
    const to = p.slice(eq + 1).trim();
    const ref = /^[a-zA-Z0-9][a-zA-Z0-9._:/@-]{0,254}$/;
    if (eq <= 0 || !ref.test(from) || !ref.test(to)) {
      throw new ShadowError(Code.InvalidArgument, `--base-map ${JSON.stringify(p)}: expected OLD=NEW, both image references (e.g. debian:12.1=debian:12.9)`);
    }
    out[from] = to;
  }
  return out;
}

/** A package mirror must be http(s); plain http is fine (apt checks signatures, the test mirror is loopback). */
export function checkPackageMirror(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ShadowError(Code.InvalidArgument, `--package-mirror ${JSON.stringify(url)} is not a URL`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new ShadowError(Code.InvalidArgument, `--package-mirror ${url}: expected an http:// or https:// URL`);
  return url;
}

/** `--registry HOST:PORT/REPO`, checked now so a typo stops the start with the flag named. */
export function checkRegistry(ref: string): string {
  try {
    parseRegistryRef(ref);
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `--registry ${JSON.stringify(ref)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return ref;
}
