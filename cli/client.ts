/**
 * Client side of the CLI: finds the aggregator (flags, else the data dir's endpoint.json), opens a
 * client for one of its services with the least privileged certificate that service admits (the
 * reader for queries, the admin for AdminService), and turns gRPC failures into sentences.
 */
import * as grpc from "@grpc/grpc-js";
import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { QueryService } from "../proto/gen/shadowlayer/v1/query_pb.js";
import { loadTls, serviceRoles, type ClientRole } from "../common/certs.js";
import { Code, ShadowError } from "../common/errors.js";
import { callUnary, channelCredentials, makeClient, type CallOptions } from "../common/grpc.js";
import { resolveClientConfig } from "./config.js";
import { readEndpoint } from "./endpoint.js";
import { fail, untilSignal } from "./exit.js";
import type { ClientFlags } from "./options.js";

/** An open client; `explain` rethrows a failed call as a sentence naming the address. */
export interface Connection {
  client: grpc.Client;
  address: string;
  explain(err: unknown): never;
}

/** Opens a client for one of the aggregator's services (QueryService by default, or AdminService). */
export async function connect(flags: ClientFlags, service: DescService = QueryService): Promise<Connection> {
  const c = resolveClientConfig(flags, process.env);
  let address = c.aggregator;
  let insecure = c.insecure;
  if (address === undefined) {
    const e = await readEndpoint(c.dataDir);
    address = e.address;
    insecure ||= e.insecure;
  }
  const tls = insecure ? "insecure" : await loadTls(c.tlsDir, { role: clientRole(service) });
  const at = address;
  return {
    client: makeClient(service, address, channelCredentials(tls)),
    address,
    explain: (err: unknown) => {
      throw explainCallError(err, at);
    },
  };
}

/** The first role the service admits is the least privileged: what the CLI presents for it. */
function clientRole(service: DescService): ClientRole {
  const role = serviceRoles[service.typeName]?.[0];
  if (role !== "reader" && role !== "admin") throw new ShadowError(Code.Internal, `no client certificate serves ${service.typeName}`);
  return role;
}

/** One unary call on a client opened for it and closed after: what most commands do. */
export async function query<I extends DescMessage, O extends DescMessage>(flags: ClientFlags, method: DescMethod & { input: I; output: O }, req: MessageInitShape<I>, opts?: CallOptions): Promise<MessageShape<O>> {
  const c = await connect(flags, method.parent);
  try {
    return await callUnary(c.client, method, req, opts).catch(c.explain);
  } finally {
    c.client.close();
  }
}

/**
 * Follows a server stream until Ctrl-C (or until the caller cancels it): a failure prints its
 * sentence and exits; our own cancel is the normal end, not a failure.
 */
export function follow(c: Connection, stream: grpc.ClientReadableStream<unknown>, opts: { untilSignal: boolean } = { untilSignal: true }): void {
  stream.on("error", (err: Partial<grpc.ServiceError>) => {
    if (err.code === grpc.status.CANCELLED) return;
    fail(explainCallError(err, c.address));
  });
  if (opts.untilSignal)
    untilSignal(async () => {
      stream.cancel();
      c.client.close();
    });
}

/** Explains a failed call in words a person can act on. */
function explainCallError(err: unknown, address: string): ShadowError {
  if (err instanceof ShadowError) return err;
  const e = err as Partial<grpc.ServiceError>;
  switch (e.code) {
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return new ShadowError(Code.AggregatorUnavailable, `the aggregator at ${address} is not answering (${e.details ?? e.message}); is \`shadowlayer up\` running?`, { cause: err });
    case grpc.status.NOT_FOUND:
      return new ShadowError(Code.NotFound, e.details ?? "not found", { cause: err });
    case grpc.status.INVALID_ARGUMENT:
      return new ShadowError(Code.InvalidArgument, e.details ?? "invalid argument", { cause: err });
    case grpc.status.PERMISSION_DENIED:
      return new ShadowError(Code.PermissionDenied, `the aggregator at ${address} refused: ${e.details ?? "permission denied"}`, { cause: err });
    default:
      return ShadowError.from(err);
  }
}
