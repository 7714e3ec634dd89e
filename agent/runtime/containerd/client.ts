/**
 * gRPC plumbing shared by the containerd and CRI clients: insecure channels over a unix socket
 * (containerd listens on a root-owned socket, no TLS), the namespace header containerd requires
 * on every call, and the classification of failed calls (gone / unreachable / refused).
 */
import * as grpc from "@grpc/grpc-js";
import type { DescService } from "@bufbuild/protobuf";
import { makeClient } from "../../../common/grpc.js";
import { Code, ShadowError } from "../../../common/errors.js";

/** containerd's and CRI's replies are bounded by this (grpc-js rejects larger ones with RESOURCE_EXHAUSTED). */
export const MAX_REPLY_BYTES = 16 * 1024 * 1024;

/** `unix:///run/containerd/containerd.sock` from a path (or an address already in that form). */
export function unixAddress(socket: string): string {
  if (socket.startsWith("unix:")) return socket;
  if (!socket.startsWith("/")) throw new ShadowError(Code.InvalidArgument, `--containerd-socket must be an absolute path to a unix socket, got "${socket}"`);
  return `unix://${socket}`;
}

/** The socket path of an address (for messages). */
export function socketPath(socket: string): string {
  return socket.replace(/^unix:(\/\/)?/, "");
}

/** A client of one service on a unix socket, insecure (the socket's file mode is the access control). */
export function unixClient(svc: DescService, socket: string): grpc.Client {
  return makeClient(svc, unixAddress(socket), grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": MAX_REPLY_BYTES,
    "grpc.max_send_message_length": 4 * 1024 * 1024,
    // A restarted containerd is redialled quickly; the watcher's backoff sits above this.
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
  });
}

/** The gRPC status of a failed call (also under a ShadowError's cause), or undefined when it was not a gRPC error. */
export function grpcCode(err: unknown): grpc.status | undefined {
  let e = err;
  for (let depth = 0; depth < 4 && typeof e === "object" && e !== null; depth++) {
    const c = (e as { code?: unknown }).code;
    if (typeof c === "number") return c as grpc.status;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export function grpcDetails(err: unknown): string {
  if (typeof err === "object" && err !== null && "details" in err) {
    const d = (err as { details: unknown }).details;
    if (typeof d === "string" && d !== "") return d;
  }
  return err instanceof Error ? err.message : String(err);
}

/** NOT_FOUND: the object vanished between list and read (containerd and CRI both answer so). */
export function isNotFound(err: unknown): boolean {
  return grpcCode(err) === grpc.status.NOT_FOUND;
}

/** The socket does not answer at all (absent, refused, or the daemon is restarting). */
export function isUnreachable(err: unknown): boolean {
  const c = grpcCode(err);
  return c === grpc.status.UNAVAILABLE || c === grpc.status.DEADLINE_EXCEEDED;
}

/** UNIMPLEMENTED: the service is not registered on the socket (CRI disabled, or an old containerd). */
export function isUnimplemented(err: unknown): boolean {
  return grpcCode(err) === grpc.status.UNIMPLEMENTED;
}

/** Turns a failed call into a ShadowError naming what was asked. */
export function callError(what: string, err: unknown): ShadowError {
  if (err instanceof ShadowError) return err;
  const code = isNotFound(err)
    ? Code.NotFound
    : isUnreachable(err)
      ? Code.EngineUnavailable
      : grpcCode(err) === grpc.status.PERMISSION_DENIED
        ? Code.PermissionDenied
        : grpcCode(err) === grpc.status.INVALID_ARGUMENT
          ? Code.InvalidArgument
          : grpcCode(err) === grpc.status.UNIMPLEMENTED
            ? Code.Unimplemented
            : Code.Internal;
  return new ShadowError(code, `${what}: ${grpcDetails(err)}`, { cause: err });
}
