/**
 * An image a strategy needs on its builder, by name: inspected there, and pulled through the
 * builder's engine when it is absent, the caller allows it (a name the operator configured, never
 * one an image's label supplied) and its name is a registry reference (a first component with a
 * dot, a port or `localhost`). A plain name that is not there is an error, never a pull from
 * Docker Hub.
 */
import type Docker from "dockerode";
import { Code, ShadowError } from "../../common/errors.js";
import { followEngine } from "../../common/engine-progress.js";
import { imageFacts } from "./image-facts.js";
import type { ImageFacts } from "./types.js";

/** `host[:port]/repo…`: names a registry explicitly. */
export function isRegistryRef(ref: string): boolean {
  const slash = ref.indexOf("/");
  if (slash <= 0) return false;
  const host = ref.slice(0, slash);
  return host === "localhost" || host.includes(".") || host.includes(":");
}

async function pull(docker: Docker, ref: string, signal: AbortSignal): Promise<void> {
  const stream = (await docker.pull(ref)) as NodeJS.ReadableStream;
  const onAbort = (): void => (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await followEngine(docker, stream, `pull of ${ref}`, Code.RegistryUnavailable);
  } catch (err) {
    throw new ShadowError(Code.RegistryUnavailable, `cannot pull ${ref} onto the builder: ${ShadowError.from(err).message}`, { cause: err });
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** The facts of `ref` on the builder, pulled first (when `mayPull`) if it is an absent registry reference. */
export async function imageOnBuilder(docker: Docker, ref: string, mayPull: boolean, signal: AbortSignal, log: (line: string) => void): Promise<ImageFacts> {
  try {
    return await imageFacts(docker, ref);
  } catch (err) {
    if (!(err instanceof ShadowError) || err.code !== Code.NotFound) throw err;
    if (!mayPull) throw new ShadowError(Code.NotFound, `image ${ref} is not on the builder (only names the policy configures are pulled)`, { cause: err });
    if (!isRegistryRef(ref)) throw new ShadowError(Code.NotFound, `image ${ref} is not on the builder (and is not a registry reference to pull)`, { cause: err });
  }
  log(`pulling ${ref}`);
  await pull(docker, ref, signal);
  return imageFacts(docker, ref);
}
