/**
 * Storage overhead and garbage collection of shadows in the registry: the bytes a shadow adds
 * over its source, and deleting an old shadow with its signature. Deleting through the API only
 * unlinks manifests; the registry's own garbage-collect pass frees the blobs no manifest names.
 */
import { signatureTag } from "../../common/cosign.js";
import { Code, ShadowError } from "../../common/errors.js";
import { assertDigest, type RegistryClient } from "../../common/registry-client.js";

/** Runs `fn`; false when the registry says the thing is not there (already gone is success). */
async function unlessGone(fn: () => Promise<void>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (err) {
    if (err instanceof ShadowError && err.code === Code.NotFound) return false;
    throw err;
  }
}

/**
 * Deletes a shadow's manifest and its signature's (tag sha256-<hex>.sig), tolerating either
 * being gone already; says which of the two were there.
 */
export async function deleteShadow(client: RegistryClient, repo: string, manifestDigest: string): Promise<{ manifest: boolean; signature: boolean }> {
  assertDigest(manifestDigest);
  const manifest = await unlessGone(() => client.deleteManifest(repo, manifestDigest));
  const signature = await unlessGone(async () => {
    const sig = await client.getManifest(repo, signatureTag(manifestDigest));
    await client.deleteManifest(repo, sig.digest);
  });
  return { manifest, signature };
}

/** Bytes of the shadow's layers the source does not have (a layer in both is stored once; one repeated counts once). */
export function addedBytes(sourceLayers: readonly string[], shadow: ReadonlyArray<{ diffId: string; size: number }>): number {
  const have = new Set(sourceLayers);
  let added = 0;
  for (const l of shadow) {
    if (have.has(l.diffId)) continue;
    have.add(l.diffId);
    added += l.size;
  }
  return added;
}
