/**
 * Client side of the CLI: finds the aggregator (flags, else the data dir's endpoint.json) and
 * turns gRPC failures into sentences.
 */
import * as grpc from "@grpc/grpc-js";
import { QueryService } from "../proto/gen/shadowlayer/v1/query_pb.js";
import { loadTls } from "../common/certs.js";
import { Code, ShadowError } from "../common/errors.js";
import { channelCredentials, makeClient } from "../common/grpc.js";
import { dataPaths, readEndpoint } from "./endpoint.js";

export interface ClientFlags {
  dataDir: string;
  aggregator?: string;
  tlsDir?: string;
  insecure?: boolean;
}

export async function queryClient(f: ClientFlags): Promise<{ client: grpc.Client; address: string }> {
  return serviceClient(QueryService, f);
}

/** A client for any of the aggregator's services (QueryService, AdminService). */
export async function serviceClient(service: Parameters<typeof makeClient>[0], f: ClientFlags): Promise<{ client: grpc.Client; address: string }> {
  let address = f.aggregator;
  let insecure = f.insecure === true;
  if (address === undefined) {
    const e = await readEndpoint(f.dataDir);
    address = e.address;
    insecure ||= e.insecure;
  }
  const tls = insecure ? "insecure" : await loadTls(f.tlsDir ?? dataPaths(f.dataDir).tls, { role: "client" });
  return { client: makeClient(service, address, channelCredentials(tls)), address };
}

/** Explains a failed call in words a person can act on. */
export function explainCallError(err: unknown, address: string): ShadowError {
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
    default:
      return ShadowError.from(err);
  }
}
