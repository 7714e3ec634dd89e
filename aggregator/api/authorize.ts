/**
 * The one authorization check of each gRPC service, made at the edge before any handler runs:
 * the peer certificate's role (its OU) must be one `serviceRoles` admits for the service, else
 * the call ends PERMISSION_DENIED naming the role it needs. An agent therefore never reads, a
 * reader never changes policies or feeds; which node an agent may speak for is checked by ingest
 * against its hello (CN = node).
 */
import type * as grpc from "@grpc/grpc-js";
import type { DescService } from "@bufbuild/protobuf";
import { LEGACY_CLIENT_ROLE, peerIdentity, serviceRoles } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import { toStatus } from "../../common/grpc.js";
import type { Logger } from "../../common/log.js";

type AnyCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, "getAuthContext" | "getPeer">;

/** Distinct certificates logged about; past it the set starts over (certificates come only from our CA). */
const MAX_REMEMBERED = 1000;

/** Wraps a service implementation so that every method first checks the caller's role. */
export type ServiceGuard = (svc: DescService, impl: grpc.UntypedServiceImplementation) => grpc.UntypedServiceImplementation;

/**
 * The guard for one aggregator. Without TLS (`--insecure`) there is no certificate to read and
 * every call passes, as the aggregator's start-up warning says.
 */
export function serviceGuard(log: Logger, requireCert: boolean): ServiceGuard {
  if (!requireCert) return (_svc, impl) => impl;
  const told = new Set<string>();
  /** Once per certificate and service: a refused client retries, and its log would drown others. */
  const once = (key: string, write: () => void) => {
    if (told.has(key)) return;
    if (told.size >= MAX_REMEMBERED) told.clear();
    told.add(key);
    write();
  };

  /** Why the call may not go on, as the status it ends with; undefined when its role is admitted. */
  const refusal = (svc: DescService, call: AnyCall): Partial<grpc.StatusObject> | undefined => {
    const allowed = serviceRoles[svc.typeName] ?? [];
    const needed = `${/^[aeiou]/.test(allowed[0] ?? "") ? "an" : "a"} ${allowed.join(" or ")} certificate (${allowed.map((r) => `OU=${r}`).join(" or ")})`;
    const cert = call.getAuthContext().sslPeerCertificate;
    const who = peerIdentity(cert?.subject);
    const key = `${cert?.fingerprint256 ?? call.getPeer()} ${svc.typeName}`;
    const refuse = (message: string) => {
      once(key, () => log.warn({ service: svc.typeName, peer: call.getPeer(), role: who?.role, name: who?.name }, "call refused: certificate role"));
      return toStatus(new ShadowError(Code.PermissionDenied, message));
    };
    // A service nobody listed admits nobody.
    if (allowed.length === 0) return refuse(`${svc.name} admits no certificate`);
    if (who === undefined) return refuse(`${svc.name} needs ${needed}; the certificate names no role`);
    if (who.role === LEGACY_CLIENT_ROLE) {
      // Made when every client was an admin, it may have been handed to tools that only read:
      // it keeps reading, and admin needs a certificate someone chose to make an admin.
      if (!allowed.includes("reader")) return refuse(`${svc.name} needs ${needed}; this \`client\` certificate from before roles may only read: run \`shadowlayer certs init\` again to add admin.crt`);
      once(key, () =>
        log.warn({ service: svc.typeName, peer: call.getPeer(), name: who.name }, "a `client` certificate from before roles is admitted as a reader only; run `shadowlayer certs init` again to add reader and admin certificates"),
      );
      return undefined;
    }
    if (!(allowed as readonly string[]).includes(who.role)) return refuse(`${svc.name} needs ${needed}; this certificate (CN=${who.name}) is ${who.role}`);
    return undefined;
  };

  return (svc, impl) => {
    const guarded: grpc.UntypedServiceImplementation = {};
    for (const m of svc.methods) {
      const handler = impl[m.localName];
      if (handler === undefined) continue;
      if (m.methodKind === "unary" || m.methodKind === "client_streaming") {
        const h = handler as (call: AnyCall, cb: grpc.sendUnaryData<unknown>) => void;
        guarded[m.localName] = ((call: AnyCall, cb: grpc.sendUnaryData<unknown>) => {
          const st = refusal(svc, call);
          if (st === undefined) h(call, cb);
          else cb(st);
        }) as grpc.UntypedHandleCall;
      } else {
        const h = handler as (call: AnyCall & NodeJS.EventEmitter) => void;
        guarded[m.localName] = ((call: AnyCall & NodeJS.EventEmitter) => {
          const st = refusal(svc, call);
          if (st === undefined) h(call);
          else call.emit("error", st);
        }) as grpc.UntypedHandleCall;
      }
    }
    return guarded;
  };
}
