/**
 * Bridges protobuf-es v2 descriptors to @grpc/grpc-js: service definitions built from the generated
 * descriptors (so there is one source of truth), typed call helpers, and the single place where
 * ShadowError codes become gRPC status codes.
 */
import { createSecureContext, type SecureContextOptions } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ShadowError } from "./errors.js";
import { AGGREGATOR_TLS_NAME, type TlsMaterial } from "./certs.js";

/** A request whose bytes did not decode; handlers answer it with INVALID_ARGUMENT. */
export class MalformedMessage {
  constructor(readonly reason: string) {}
}

type TypedMethod<I extends DescMessage, O extends DescMessage> = DescMethod & { input: I; output: O };

export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** A grpc-js service definition for a generated service; decode failures become MalformedMessage. */
export function serviceDefinition(svc: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<MessageShape<DescMessage> | MalformedMessage, MessageShape<DescMessage>>> = {};
  for (const m of svc.methods) {
    def[m.localName] = {
      path: methodPath(m),
      originalName: m.localName,
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: (v: MessageShape<DescMessage> | MalformedMessage) => {
        if (v instanceof MalformedMessage) throw new ShadowError(Code.InvalidArgument, v.reason);
        return Buffer.from(toBinary(m.input, v));
      },
      requestDeserialize: (b: Buffer) => {
        try {
          return fromBinary(m.input, b);
        } catch (err) {
          return new MalformedMessage(err instanceof Error ? err.message : String(err));
        }
      },
      responseSerialize: (v: MessageShape<DescMessage>) => Buffer.from(toBinary(m.output, v)),
      responseDeserialize: (b: Buffer) => fromBinary(m.output, b),
    };
  }
  return def;
}

const statusByCode: Record<Code, grpc.status> = {
  [Code.InvalidArgument]: grpc.status.INVALID_ARGUMENT,
  [Code.NotFound]: grpc.status.NOT_FOUND,
  [Code.EngineUnavailable]: grpc.status.UNAVAILABLE,
  [Code.AggregatorUnavailable]: grpc.status.UNAVAILABLE,
  [Code.StorageFailing]: grpc.status.UNAVAILABLE,
  [Code.Unauthenticated]: grpc.status.UNAUTHENTICATED,
  [Code.PermissionDenied]: grpc.status.PERMISSION_DENIED,
  [Code.FailedPrecondition]: grpc.status.FAILED_PRECONDITION,
  [Code.Unimplemented]: grpc.status.UNIMPLEMENTED,
  [Code.Internal]: grpc.status.INTERNAL,
  [Code.RegistryUnavailable]: grpc.status.UNAVAILABLE,
  [Code.BuilderUnavailable]: grpc.status.UNAVAILABLE,
  [Code.BuildFailed]: grpc.status.ABORTED,
  [Code.Cancelled]: grpc.status.CANCELLED,
};

/** The one mapping from our errors to a gRPC status, used by every handler. */
export function toStatus(err: unknown): Partial<grpc.StatusObject> {
  const e = ShadowError.from(err);
  return { code: statusByCode[e.code], details: e.message };
}

/** Wraps an async unary handler: malformed input and thrown errors become proper statuses. */
export function unaryHandler<I extends DescMessage, O extends DescMessage>(
  _method: TypedMethod<I, O>,
  fn: (req: MessageShape<I>, call: grpc.ServerUnaryCall<MessageShape<I>, MessageShape<O>>) => Promise<MessageShape<O>>,
): grpc.handleUnaryCall<MessageShape<I> | MalformedMessage, MessageShape<O>> {
  return (call, callback) => {
    const req = call.request;
    if (req instanceof MalformedMessage) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `malformed request: ${req.reason}` });
      return;
    }
    fn(req, call as grpc.ServerUnaryCall<MessageShape<I>, MessageShape<O>>).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toStatus(err)),
    );
  };
}

/** Wraps a server-streaming handler the same way; the handler owns ending the stream. */
export function serverStreamHandler<I extends DescMessage, O extends DescMessage>(
  _method: TypedMethod<I, O>,
  fn: (req: MessageShape<I>, call: grpc.ServerWritableStream<MessageShape<I>, MessageShape<O>>) => Promise<void>,
): grpc.handleServerStreamingCall<MessageShape<I> | MalformedMessage, MessageShape<O>> {
  return (call) => {
    const req = call.request;
    if (req instanceof MalformedMessage) {
      call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: `malformed request: ${req.reason}` });
      return;
    }
    fn(req, call as grpc.ServerWritableStream<MessageShape<I>, MessageShape<O>>).catch((err: unknown) => {
      call.emit("error", toStatus(err));
    });
  };
}

/** A generic client for a generated service. */
export function makeClient(svc: DescService, address: string, creds: grpc.ChannelCredentials, options: grpc.ClientOptions = {}): grpc.Client {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(svc), svc.name);
  const host = address.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  // TLS may not send an IP as server name (RFC 6066): check the certificate against the
  // aggregator's service name instead, which every aggregator certificate carries.
  const byIp = /^[\d.]+$|:/.test(host) ? { "grpc.ssl_target_name_override": AGGREGATOR_TLS_NAME } : {};
  return new Ctor(address, creds, { ...byIp, ...options });
}

export interface CallOptions {
  deadlineMs?: number;
  /** Request metadata (headers), e.g. containerd's `containerd-namespace`. */
  metadata?: Record<string, string>;
}

function toMetadata(m: Record<string, string> | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (m !== undefined) for (const [k, v] of Object.entries(m)) md.set(k, v);
  return md;
}

/** Calls a unary method; a failed call rejects with a grpc ServiceError (it has `code`). */
export function callUnary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: TypedMethod<I, O>,
  req: MessageInitShape<I>,
  opts: CallOptions = {},
): Promise<MessageShape<O>> {
  const msg = create(method.input, req);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      methodPath(method),
      (v: MessageShape<I>) => Buffer.from(toBinary(method.input, v)),
      (b: Buffer) => fromBinary(method.output, b),
      msg,
      toMetadata(opts.metadata),
      { deadline: Date.now() + (opts.deadlineMs ?? 10_000) },
      (err, res) => (err !== null || res === undefined ? reject(err ?? new Error("empty response")) : resolve(res)),
    );
  });
}

/** Opens a server stream. */
export function callServerStream<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: TypedMethod<I, O>,
  req: MessageInitShape<I>,
  opts: Pick<CallOptions, "metadata"> & { deadlineMs?: number } = {},
): grpc.ClientReadableStream<MessageShape<O>> {
  return client.makeServerStreamRequest(
    methodPath(method),
    (v: MessageShape<I>) => Buffer.from(toBinary(method.input, v)),
    (b: Buffer) => fromBinary(method.output, b),
    create(method.input, req),
    toMetadata(opts.metadata),
    opts.deadlineMs === undefined ? {} : { deadline: Date.now() + opts.deadlineMs },
  );
}

/** Opens a bidirectional stream. */
export function callBidi<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: TypedMethod<I, O>,
): grpc.ClientDuplexStream<MessageShape<I>, MessageShape<O>> {
  return client.makeBidiStreamRequest(
    methodPath(method),
    (v: MessageShape<I>) => Buffer.from(toBinary(method.input, v)),
    (b: Buffer) => fromBinary(method.output, b),
  );
}

/**
 * TLS 1.3, or 1.2 with forward secrecy and an AEAD cipher only: no CBC (Lucky13-style padding
 * oracles), no RSA key exchange. OpenSSL keeps its TLS 1.3 suites (all AEAD) when the list names
 * none, as this one does.
 */
export const TLS_POLICY = {
  minVersion: "TLSv1.2",
  ciphers: [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
  ].join(":"),
} as const satisfies SecureContextOptions;

/**
 * mTLS under TLS_POLICY: createSsl would take grpc-js's own cipher list (or GRPC_SSL_CIPHER_SUITES)
 * and no minimum version, so the options are given to the server as they are.
 */
class PolicyServerCredentials extends grpc.ServerCredentials {
  constructor(tls: TlsMaterial) {
    super({ requestCert: true, rejectUnauthorized: true }, { ...TLS_POLICY, ca: tls.ca, cert: tls.cert, key: tls.key });
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** Server credentials: mTLS requiring a client certificate from our CA, unless explicitly insecure. */
export function serverCredentials(tls: TlsMaterial | "insecure"): grpc.ServerCredentials {
  if (tls === "insecure") return grpc.ServerCredentials.createInsecure();
  return new PolicyServerCredentials(tls);
}

/** Client credentials under the same TLS_POLICY as the server's. */
export function channelCredentials(tls: TlsMaterial | "insecure"): grpc.ChannelCredentials {
  if (tls === "insecure") return grpc.credentials.createInsecure();
  return grpc.credentials.createFromSecureContext(createSecureContext({ ...TLS_POLICY, ca: tls.ca, key: tls.key, cert: tls.cert }));
}

/** Binds a server, resolving to the bound port (port 0 picks a free one). */
export function bindServer(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => (err ? reject(new ShadowError(Code.FailedPrecondition, `cannot listen on ${address}: ${err.message}`, { cause: err })) : resolve(port)));
  });
}
