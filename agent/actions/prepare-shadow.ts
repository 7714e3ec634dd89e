/**
 * PrepareShadow: get the shadow image (pulled by digest, or already in the local engine), check
 * the aggregator's signature on it before anything is created, and create (not start) a shadow
 * container with the original's configuration. Any doubt answers REJECTED and leaves no container:
 * a shadow whose signature is missing or does not match is never used.
 */
import { readFile } from "node:fs/promises";
import type Docker from "dockerode";
import { CommandStatus, type PrepareShadow } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { verifySignature, type SignedIdentity } from "../../common/cosign.js";
import { Code, ShadowError } from "../../common/errors.js";
import { isEngineNotFound } from "../../common/engine.js";
import type { Logger } from "../../common/log.js";
import type { CommandOutcome } from "./command-handler.js";
import { SHADOW_CONTAINER_LABELS, type ShadowContainers } from "./shadow-containers.js";

/** Registry credentials for pulls and signature reads (the shape of common/registry-client.ts RegistryAuth). */
export interface RegistryCredentials {
  username: string;
  password: string;
}

/** Where a shadow's stored signature is read from. */
export interface SignatureLocation {
  host: string;
  repository: string;
  /** CA PEM to trust for the registry (else the system roots). */
  ca?: Buffer;
  auth?: RegistryCredentials;
}

/**
 * Reads the cosign signature a registry stores for a manifest digest (tag sha256-<hex>.sig): the
 * seam to common/registry-signature.ts `fetchSignature(new RegistryClient({ host, ca, auth }), repository, digest)`.
 */
export type StoredSignatureReader = (at: SignatureLocation, manifestDigest: string) => Promise<{ payload: Buffer; signature: string }>;

export interface PrepareShadowOptions {
  docker: Docker;
  shadows: ShadowContainers;
  log: Logger;
  /** The aggregator's public key file (cosign.pub); undefined: every shadow is refused with `noKeyReason`. */
  signingKeyPub?: string;
  /** Why there is no key, said in the refusal. */
  noKeyReason?: string;
  registryAuth?: RegistryCredentials;
  registryCa?: Buffer;
  /** Without one, shadows from a registry are refused (their stored signature cannot be checked). */
  storedSignatures?: StoredSignatureReader;
  /** A pull's bound, progress included (default 10 minutes). */
  pullTimeoutMs?: number;
}

/** The `docker-reference` a local-only shadow's payload names (common/cosign.ts SignedIdentity). */
export const LOCAL_REFERENCE = "local";

const DIGEST = /^sha256:[0-9a-f]{64}$/;
/** A local image's name or id, as the engine's API takes it in a path. */
const LOCAL_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.:/@-]{0,511}$/;
const HOST_PART = String.raw`(?:\[[0-9a-fA-F:]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]{1,5})?`;
const PATH_COMPONENT = String.raw`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`;
const DIGEST_REFERENCE = new RegExp(String.raw`^(${HOST_PART})/(${PATH_COMPONENT}(?:/${PATH_COMPONENT})*)@(sha256:[0-9a-f]{64})$`);

/** A reference by digest into a named registry: `host[:port]/repo[/…]@sha256:<hex>`. */
export interface DigestReference {
  host: string;
  repository: string;
  digest: string;
}

/**
 * Parses a shadow's registry reference, refusing anything else (a tag, no registry host, a
 * Docker Hub short name, bad characters): the agent pulls exactly the digest that was signed.
 */
export function parseDigestReference(ref: string): DigestReference {
  const m = ref.length <= 512 ? DIGEST_REFERENCE.exec(ref) : null;
  const [host, repository, digest] = [m?.[1], m?.[2], m?.[3]];
  // Without a dot, a port or "localhost" the engine would read the first part as a Docker Hub namespace.
  if (host === undefined || repository === undefined || digest === undefined || !(host.includes(".") || host.includes(":") || host === "localhost") || repository.length > 255) {
    throw new ShadowError(Code.InvalidArgument, `shadow image ${JSON.stringify(ref.slice(0, 300))} is not a registry reference by digest (host[:port]/repository@sha256:…)`);
  }
  return { host, repository, digest };
}

/**
 * Checks one signature against the aggregator's key: it must verify, name `digest`, and name the
 * repository the shadow comes from (`local` for a shadow kept in the local engine). Throws PermissionDenied.
 */
export function verifyShadowSignature(payload: Uint8Array, signature: string, publicKeyPem: string, expected: { digest: string; dockerReference: string }): SignedIdentity {
  const id = verifySignature(payload, signature, publicKeyPem, expected.digest);
  if (id.dockerReference !== expected.dockerReference) {
    throw new ShadowError(Code.PermissionDenied, `the signature is for ${JSON.stringify(id.dockerReference)}, not ${JSON.stringify(expected.dockerReference)}`);
  }
  return id;
}

const rejected = (message: string): CommandOutcome => ({ status: CommandStatus.REJECTED, message });

/** The image a verified shadow runs from, and how it got here. */
interface ShadowImage {
  /** What the container is created from: the registry reference, or the local image id. */
  image: string;
  reference: string;
  pulled: boolean;
}

/** Runs one PrepareShadow; never throws for bad input (REJECTED), only for an engine failure. */
export async function prepareShadow(a: PrepareShadow, commandId: string, o: PrepareShadowOptions, original: Docker.ContainerInspectInfo): Promise<CommandOutcome> {
  const log = o.log.child({ command: commandId, container: original.Id, job: a.jobId });
  // A shadow that a switchover started serves now and may get a shadow of its own; one never started may not.
  if (original.Config.Labels?.[SHADOW_CONTAINER_LABELS.shadowOf] !== undefined && original.State.Status === "created") {
    return rejected(`container ${original.Id.slice(0, 12)} is itself a shadow, not started`);
  }
  if (!DIGEST.test(a.imageId)) return rejected(`image id ${JSON.stringify(a.imageId.slice(0, 100))} is not sha256:<hex>`);
  if (o.signingKeyPub === undefined) return rejected(`shadow refused: ${o.noKeyReason ?? "no signing public key configured (--signing-key-pub)"}`);
  let key: string;
  try {
    key = await readFile(o.signingKeyPub, "utf8");
  } catch (err) {
    return rejected(`shadow refused: cannot read the signing public key ${o.signingKeyPub}: ${errText(err)}`);
  }

  let shadow: ShadowImage;
  try {
    shadow = a.localOnly ? await localShadow(a, key, o) : await registryShadow(a, key, o, log);
  } catch (err) {
    if (!(err instanceof ShadowError) || err.code === Code.Internal || err.code === Code.EngineUnavailable) throw err;
    log.warn({ image: a.shadowImage, code: err.code, err: err.message }, "shadow not prepared");
    // A registry that is down or refuses the credentials may answer later: FAILED, for the aggregator to retry.
    if (err.code === Code.RegistryUnavailable || err.code === Code.Unauthenticated) return { status: CommandStatus.FAILED, message: err.message };
    return rejected(`shadow refused: ${err.message}`);
  }
  return ensureShadowContainer(a, original, shadow, o, log);
}

/** Local only: the image must be in the engine with the signed id; nothing is pulled. */
async function localShadow(a: PrepareShadow, key: string, o: PrepareShadowOptions): Promise<ShadowImage> {
  const id = await imageId(o.docker, a.imageId);
  if (id !== a.imageId) throw new ShadowError(Code.NotFound, `no local image ${a.imageId}`);
  if (a.shadowImage !== "" && a.shadowImage !== a.imageId) {
    if (!LOCAL_NAME.test(a.shadowImage)) throw new ShadowError(Code.InvalidArgument, `shadow image ${JSON.stringify(a.shadowImage.slice(0, 300))} is not an image reference`);
    const named = await imageId(o.docker, a.shadowImage);
    if (named !== a.imageId) throw new ShadowError(Code.FailedPrecondition, `local image ${JSON.stringify(a.shadowImage.slice(0, 300))} is ${named ?? "absent"}, not ${a.imageId}`);
  }
  verifyShadowSignature(a.signaturePayload, a.signature, key, { digest: a.imageId, dockerReference: LOCAL_REFERENCE });
  return { image: a.imageId, reference: a.shadowImage !== "" ? a.shadowImage : a.imageId, pulled: false };
}

/**
 * From a registry: the stored signature (and the command's, when it carries one) checked before
 * the pull, so nothing unsigned is downloaded; the pulled image's id checked after, and the image
 * removed again when it does not match (unless it was here before).
 */
async function registryShadow(a: PrepareShadow, key: string, o: PrepareShadowOptions, log: Logger): Promise<ShadowImage> {
  const ref = parseDigestReference(a.shadowImage);
  if (a.manifestDigest !== ref.digest) throw new ShadowError(Code.InvalidArgument, `the manifest digest ${JSON.stringify(a.manifestDigest.slice(0, 100))} is not the one the shadow image names (${ref.digest})`);
  const expected = { digest: a.manifestDigest, dockerReference: `${ref.host}/${ref.repository}` };
  if (a.signaturePayload.length > 0 || a.signature !== "") verifyShadowSignature(a.signaturePayload, a.signature, key, expected);
  if (o.storedSignatures === undefined) throw new ShadowError(Code.FailedPrecondition, "this agent cannot read signatures from a registry");
  let stored: { payload: Buffer; signature: string };
  try {
    stored = await o.storedSignatures({ host: ref.host, repository: ref.repository, ...(o.registryCa ? { ca: o.registryCa } : {}), ...(o.registryAuth ? { auth: o.registryAuth } : {}) }, a.manifestDigest);
  } catch (err) {
    const e = ShadowError.from(err);
    throw new ShadowError(e.code === Code.Internal ? Code.RegistryUnavailable : e.code, `cannot read the stored signature of ${a.shadowImage}: ${e.message}`, { cause: err });
  }
  verifyShadowSignature(stored.payload, stored.signature, key, expected);

  const before = await imageId(o.docker, a.shadowImage);
  if (before === undefined) await pull(o, a.shadowImage, ref.host, log);
  const after = await imageId(o.docker, a.shadowImage);
  if (after !== a.imageId) {
    if (before === undefined && after !== undefined) {
      await o.docker
        .getImage(a.shadowImage)
        .remove()
        .catch((err: unknown) => log.warn({ image: a.shadowImage, err: errText(err) }, "cannot remove the refused image"));
    }
    throw new ShadowError(Code.PermissionDenied, `the pulled image is ${after ?? "absent"}, not the signed ${a.imageId}`);
  }
  return { image: a.shadowImage, reference: a.shadowImage, pulled: before === undefined };
}

/** Pulls by digest through the engine, following progress, within the bound. */
async function pull(o: PrepareShadowOptions, ref: string, host: string, log: Logger): Promise<void> {
  const auth = o.registryAuth === undefined ? {} : { authconfig: { username: o.registryAuth.username, password: o.registryAuth.password, serveraddress: host } };
  const ms = o.pullTimeoutMs ?? 10 * 60_000;
  const started = Date.now();
  let stream: NodeJS.ReadableStream & { destroy?: () => void };
  try {
    stream = (await o.docker.pull(ref, auth)) as NodeJS.ReadableStream;
  } catch (err) {
    throw pullError(ref, err);
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.destroy?.();
      reject(new ShadowError(Code.RegistryUnavailable, `pull of ${ref} did not finish within ${Math.round(ms / 1000)} s`));
    }, ms);
    let lastLog = 0;
    o.docker.modem.followProgress(
      stream,
      (err: Error | null, out: Array<{ error?: string; errorDetail?: { message?: string } }>) => {
        clearTimeout(timer);
        const bad = out?.find((e) => e.error !== undefined || e.errorDetail !== undefined);
        if (err !== null) reject(pullError(ref, err));
        else if (bad !== undefined) reject(pullError(ref, new Error(bad.error ?? bad.errorDetail?.message ?? "unknown error")));
        else resolve();
      },
      (e: { status?: string; id?: string; progress?: string }) => {
        if (Date.now() - lastLog < 2000) return;
        lastLog = Date.now();
        log.info({ image: ref, status: e.status, layer: e.id, progress: e.progress }, "pulling the shadow image");
      },
    );
  });
  log.info({ image: ref, ms: Date.now() - started }, "shadow image pulled");
}

function pullError(ref: string, err: unknown): ShadowError {
  const why = errText(err);
  const code = /unauthorized|authentication required|denied/i.test(why) ? Code.Unauthenticated : Code.RegistryUnavailable;
  return new ShadowError(code, `pull of ${ref} failed: ${why}`, { cause: err });
}

/**
 * Keeps one shadow container per original: the same shadow again keeps the one there; another one
 * replaces it, unless their rebuilt-at labels say it is older. A shadow that already ran (switched
 * over) is not replaced.
 */
async function ensureShadowContainer(a: PrepareShadow, original: Docker.ContainerInspectInfo, shadow: ShadowImage, o: PrepareShadowOptions, log: Logger): Promise<CommandOutcome> {
  const existing = await o.shadows.list(original.Id);
  const same = existing.find((s) => s.shadowImage === shadow.reference && s.imageId === a.imageId);
  if (same !== undefined) {
    return { status: CommandStatus.OK, message: `shadow container ${same.name} (${same.id.slice(0, 12)}) of ${a.imageId.slice(0, 19)} is already prepared`, shadowContainerId: same.id };
  }
  const ran = existing.find((s) => s.state !== "created");
  if (ran !== undefined) return rejected(`shadow container ${ran.name} (${ran.id.slice(0, 12)}) has run (${ran.state}); not replaced`);
  const incoming = await rebuiltAt(o.docker, shadow.image);
  for (const s of existing) {
    const prepared = await rebuiltAt(o.docker, s.imageId);
    if (incoming !== undefined && prepared !== undefined && prepared > incoming) {
      return rejected(`shadow ${shadow.reference.slice(0, 200)} (rebuilt at ${new Date(incoming).toISOString()}) is older than the prepared ${s.name} (rebuilt at ${new Date(prepared).toISOString()}); kept`);
    }
  }
  for (const s of existing) await o.shadows.remove(s, `replaced by ${shadow.reference}`);
  const created = await o.shadows.create(original, { image: shadow.image, reference: shadow.reference, job: a.jobId });
  log.info({ shadow: created.id, name: created.name, image: shadow.reference, pulled: shadow.pulled, replaced: existing.length }, "shadow prepared");
  return {
    status: CommandStatus.OK,
    message: `shadow container ${created.name} (${created.id.slice(0, 12)}) created from ${shadow.reference.slice(0, 200)}, not started${existing.length > 0 ? `; replaced ${existing.map((s) => s.name).join(", ")}` : ""}`,
    shadowContainerId: created.id,
  };
}

/** The label a rebuilt image carries (aggregator/rebuild/types.ts SHADOW_LABELS.rebuiltAt; the agent does not import the aggregator). */
export const REBUILT_AT_LABEL = "shadowlayer.rebuilt-at";

/** When an image was rebuilt (ms since the epoch), from its label; undefined when it has no readable one. */
async function rebuiltAt(docker: Docker, ref: string): Promise<number | undefined> {
  const info = await docker
    .getImage(ref)
    .inspect()
    .catch(() => undefined);
  const t = Date.parse(info?.Config?.Labels?.[REBUILT_AT_LABEL] ?? "");
  return Number.isFinite(t) ? t : undefined;
}

/** The id of an image in the engine, undefined when it has none by that reference (or the reference is malformed). */
async function imageId(docker: Docker, ref: string): Promise<string | undefined> {
  try {
    const info = await docker.getImage(ref).inspect();
    return info.Id;
  } catch (err) {
    if (isEngineNotFound(err) || statusOf(err) === 400) return undefined;
    throw ShadowError.from(err, Code.EngineUnavailable);
  }
}

function statusOf(err: unknown): unknown {
  return typeof err === "object" && err !== null && "statusCode" in err ? (err as { statusCode: unknown }).statusCode : undefined;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
