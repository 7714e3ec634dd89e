/**
 * A shadow's cosign signature kept in the registry beside it (common/cosign.ts makes and reads the
 * layout): stored by the aggregator after a push, fetched by agents before they use a shadow. A
 * signature that is absent or unreadable is PermissionDenied, like one that does not verify.
 */
import { readSignatureManifest, sha256Digest, signatureManifest, signatureTag } from "./cosign.js";
import { Code, ShadowError } from "./errors.js";
import { assertDigest, MANIFEST_MEDIA_TYPES, type RegistryClient } from "./registry-client.js";

/** A simple-signing payload is a few hundred bytes; more is not one. */
const PAYLOAD_MAX_BYTES = 64 * 1024;

/** Pushes the cosign signature manifest (common/cosign.ts signatureManifest) under tag sha256-<hex>.sig; returns the tag. */
export async function storeSignature(c: RegistryClient, repo: string, manifestDigest: string, payload: Uint8Array, signature: string): Promise<string> {
  assertDigest(manifestDigest);
  const { config, manifest } = signatureManifest(payload, signature);
  const payloadBuf = Buffer.from(payload);
  await c.pushBlob(repo, sha256Digest(config), config.length, () => config);
  await c.pushBlob(repo, sha256Digest(payloadBuf), payloadBuf.length, () => payloadBuf);
  const tag = signatureTag(manifestDigest);
  await c.putManifest(repo, tag, manifest, MANIFEST_MEDIA_TYPES.ociManifest);
  return tag;
}

/** Reads it back: the payload blob and the annotation's signature (PermissionDenied when absent or malformed). */
export async function fetchSignature(c: RegistryClient, repo: string, manifestDigest: string): Promise<{ payload: Buffer; signature: string }> {
  assertDigest(manifestDigest);
  const tag = signatureTag(manifestDigest);
  let manifest: Buffer;
  try {
    manifest = (await c.getManifest(repo, tag)).body;
  } catch (err) {
    if (err instanceof ShadowError && err.code === Code.NotFound) {
      throw new ShadowError(Code.PermissionDenied, `the shadow ${c.host}/${repo}@${manifestDigest} has no signature (no tag ${tag})`, { cause: err });
    }
    throw err;
  }
  const { payloadDigest, signature } = readSignatureManifest(manifest);
  try {
    assertDigest(payloadDigest);
    return { payload: await c.getBlobBuffer(repo, payloadDigest, PAYLOAD_MAX_BYTES), signature };
  } catch (err) {
    if (err instanceof ShadowError && (err.code === Code.NotFound || err.code === Code.InvalidArgument)) {
      throw new ShadowError(Code.PermissionDenied, `the signature of ${c.host}/${repo}@${manifestDigest} names a payload that cannot be read: ${err.message}`, { cause: err });
    }
    throw err;
  }
}
