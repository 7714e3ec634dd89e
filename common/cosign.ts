/**
 * Image signatures in cosign's key-based layout, so that `cosign verify --key cosign.pub` and
 * other standard tooling accept a shadow: a "simple signing" payload naming the image's manifest
 * digest, signed with ECDSA P-256 over SHA-256 (DER, base64), stored in the registry as an OCI
 * manifest under the tag `sha256-<hex>.sig` whose one layer is the payload and carries the
 * signature in the annotation `dev.cosignproject.cosign/signature`.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { Code, ShadowError } from "./errors.js";

export const SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json";
export const SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature";
const PAYLOAD_TYPE = "cosign container image signature";

/** The payload cosign signs: the image's repository and manifest digest. */
export interface SignedIdentity {
  /** registry/repository (no tag, no digest); for a shadow kept in the local engine, "local". */
  dockerReference: string;
  /** sha256:… of the manifest (with a registry) or of the image config (local engine only). */
  digest: string;
}

/** A new ECDSA P-256 key pair as PEM (PKCS#8 private, SPKI public). */
export function generateSigningKeys(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return {
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/** The payload bytes, in the key order cosign writes. */
export function signingPayload(id: SignedIdentity): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: { identity: { "docker-reference": id.dockerReference }, image: { "docker-manifest-digest": id.digest }, type: PAYLOAD_TYPE },
      optional: null,
    }),
  );
}

/** Reads a payload back; throws when it is not a cosign simple-signing payload. */
export function parseSigningPayload(payload: Uint8Array): SignedIdentity {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(payload).toString("utf8"));
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, "signature payload is not JSON", { cause: err });
  }
  const c = (v as { critical?: { identity?: Record<string, unknown>; image?: Record<string, unknown>; type?: unknown } } | null)?.critical;
  const ref = c?.identity?.["docker-reference"];
  const digest = c?.image?.["docker-manifest-digest"];
  if (c?.type !== PAYLOAD_TYPE || typeof ref !== "string" || typeof digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(digest)) {
    throw new ShadowError(Code.InvalidArgument, "signature payload is not a cosign simple-signing payload with a sha256 manifest digest");
  }
  return { dockerReference: ref, digest };
}

function key(pem: string, kind: "private" | "public"): KeyObject {
  try {
    return kind === "private" ? createPrivateKey(pem) : createPublicKey(pem);
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `not a PEM ${kind} key`, { cause: err });
  }
}

/** The base64 DER ECDSA signature of the payload. */
export function signPayload(payload: Uint8Array, privateKeyPem: string): string {
  return sign("sha256", payload, key(privateKeyPem, "private")).toString("base64");
}

/**
 * Checks a signature and that its payload names `expectedDigest`; returns the identity, or throws
 * PermissionDenied saying what did not match (a shadow with a bad signature is never used).
 */
export function verifySignature(payload: Uint8Array, signatureB64: string, publicKeyPem: string, expectedDigest: string): SignedIdentity {
  const sig = Buffer.from(signatureB64, "base64");
  let ok = false;
  try {
    ok = sig.length > 0 && verify("sha256", payload, key(publicKeyPem, "public"), sig);
  } catch {
    ok = false;
  }
  if (!ok) throw new ShadowError(Code.PermissionDenied, "the shadow's signature does not verify with the aggregator's public key");
  const id = parseSigningPayload(payload);
  if (id.digest !== expectedDigest) {
    throw new ShadowError(Code.PermissionDenied, `the signature names ${id.digest}, not the shadow's ${expectedDigest}`);
  }
  return id;
}

/** The registry tag cosign stores a digest's signature under. */
export function signatureTag(digest: string): string {
  return digest.replace(":", "-") + ".sig";
}

export function sha256Digest(b: Uint8Array): string {
  return `sha256:${createHash("sha256").update(b).digest("hex")}`;
}

/** The blobs and OCI manifest of a signature, ready to push (config, payload layer, manifest). */
export function signatureManifest(payload: Uint8Array, signatureB64: string): { config: Buffer; manifest: Buffer } {
  const config = Buffer.from(
    JSON.stringify({
      architecture: "",
      config: {},
      created: "0001-01-01T00:00:00Z",
      history: [{ created: "0001-01-01T00:00:00Z" }],
      os: "",
      rootfs: { type: "layers", diff_ids: [sha256Digest(payload)] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", size: config.length, digest: sha256Digest(config) },
      layers: [{ mediaType: SIMPLE_SIGNING_MEDIA_TYPE, size: payload.length, digest: sha256Digest(payload), annotations: { [SIGNATURE_ANNOTATION]: signatureB64 } }],
    }),
  );
  return { config, manifest };
}

/** The payload digest and signature a signature manifest names (to fetch the payload blob and verify). */
export function readSignatureManifest(manifest: Uint8Array): { payloadDigest: string; signature: string } {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(manifest).toString("utf8"));
  } catch (err) {
    throw new ShadowError(Code.PermissionDenied, "signature manifest is not JSON", { cause: err });
  }
  const layers = (v as { layers?: Array<{ mediaType?: unknown; digest?: unknown; annotations?: Record<string, unknown> }> } | null)?.layers;
  const l = Array.isArray(layers) ? layers.find((x) => x?.mediaType === SIMPLE_SIGNING_MEDIA_TYPE) : undefined;
  const sig = l?.annotations?.[SIGNATURE_ANNOTATION];
  if (l === undefined || typeof l.digest !== "string" || typeof sig !== "string") {
    throw new ShadowError(Code.PermissionDenied, "signature manifest has no simple-signing layer with a signature annotation");
  }
  return { payloadDigest: l.digest, signature: sig };
}
