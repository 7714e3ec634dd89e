/**
 * One error type for the whole program, with a stable string code and a cause, so that callers
 * branch on `code` and the network edge maps it to a gRPC status in one place.
 */
export enum Code {
  InvalidArgument = "SL_INVALID_ARGUMENT",
  NotFound = "SL_NOT_FOUND",
  EngineUnavailable = "SL_ENGINE_UNAVAILABLE",
  AggregatorUnavailable = "SL_AGGREGATOR_UNAVAILABLE",
  /** A level store cannot write (disk full or failing); it recovers by itself. */
  StorageFailing = "SL_STORAGE_FAILING",
  Unauthenticated = "SL_UNAUTHENTICATED",
  PermissionDenied = "SL_PERMISSION_DENIED",
  FailedPrecondition = "SL_FAILED_PRECONDITION",
  Unimplemented = "SL_UNIMPLEMENTED",
  Internal = "SL_INTERNAL",
  /** An OCI registry does not answer, or answers with an error (auth refused is Unauthenticated). */
  RegistryUnavailable = "SL_REGISTRY_UNAVAILABLE",
  /** No builder of the pool is healthy, or the one a job ran on went away. */
  BuilderUnavailable = "SL_BUILDER_UNAVAILABLE",
  /** A build or strategy step failed (its log tail is kept with the job). */
  BuildFailed = "SL_BUILD_FAILED",
  /** The job was cancelled (by an operator, or because its reasons went away). */
  Cancelled = "SL_CANCELLED",
}

export class ShadowError extends Error {
  override readonly name = "ShadowError";
  readonly code: Code;

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }

  /** Turns anything thrown into a ShadowError, keeping the original as `cause`. */
  static from(reason: unknown, code: Code = Code.Internal): ShadowError {
    if (reason instanceof ShadowError) return reason;
    if (reason instanceof Error) return new ShadowError(code, reason.message, { cause: reason });
    return new ShadowError(code, String(reason), { cause: reason });
  }
}

/** The errno-style code of a Node system error (ENOENT, ESRCH, ...), if it is one. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err) {
    const c = (err as { code: unknown }).code;
    return typeof c === "string" ? c : undefined;
  }
  return undefined;
}

/** True for the errors a reader of /proc or of a container's files gets when its target vanished. */
export function isVanished(err: unknown): boolean {
  const c = errnoCode(err);
  return c === "ENOENT" || c === "ESRCH" || c === "ENOTDIR" || c === "EACCES" || c === "EPERM";
}
