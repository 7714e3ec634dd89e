/**
 * Who may post alerts to the Falco intake: a holder of the intake's token, or (with mTLS) a
 * client certificate from the shadowlayer CA whose role is `detector` (or `admin`). Falco's
 * `http_output` sends no header of its own choosing, but libcurl turns credentials in its `url`
 * into Basic auth, so the token is taken as a Bearer token (falcosidekick's custom header) or as
 * the Basic password (Falco). An alert switches a service off: nobody anonymous may send one.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { TLSSocket } from "node:tls";
import { peerIdentity, type Role } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";

/** The certificate roles the intake admits. */
export const FALCO_CLIENT_ROLES: readonly Role[] = ["detector", "admin"];

/** Shorter tokens are refused at start: guessable. */
const MIN_TOKEN = 16;
const MAX_TOKEN = 4096;

/** Reads the token file (surrounding whitespace and the final newline are not part of it). */
export async function readTokenFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ShadowError(Code.FailedPrecondition, `cannot read the Falco intake's token file ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const token = text.trim();
  if (token.length < MIN_TOKEN || token.length > MAX_TOKEN || /[\s\x00-\x1f\x7f]/.test(token)) {
    throw new ShadowError(Code.InvalidArgument, `the Falco intake's token file ${file} must hold one token of ${MIN_TOKEN} to ${MAX_TOKEN} characters without spaces or controls (e.g. \`openssl rand -hex 32\`)`);
  }
  return token;
}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();

/** Compares in constant time (over the digests, so the token's length does not show either). */
export function tokenMatcher(token: string): (presented: string) => boolean {
  const want = digest(token);
  return (presented) => timingSafeEqual(digest(presented), want);
}

/** The token an Authorization header carries: `Bearer <token>`, or the password of `Basic`. */
export function presentedToken(header: string | undefined): string | undefined {
  if (header === undefined || header.length > MAX_TOKEN * 2) return undefined;
  const m = /^(\S+)\s+(\S+)\s*$/.exec(header);
  if (m === null) return undefined;
  const scheme = (m[1] ?? "").toLowerCase();
  const value = m[2] ?? "";
  if (scheme === "bearer") return value;
  if (scheme !== "basic") return undefined;
  const decoded = Buffer.from(value, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

export type CertVerdict = { ok: true; name: string; role: string } | { ok: false; status: 401 | 403; why: string; present: boolean };

/** What the connection's client certificate (requested, not required, by the server) says. */
export function clientCertVerdict(socket: TLSSocket): CertVerdict {
  const cert = socket.getPeerCertificate();
  const present = cert !== null && typeof cert === "object" && Object.keys(cert).length > 0;
  if (!present) return { ok: false, status: 401, why: "no client certificate", present };
  if (!socket.authorized) return { ok: false, status: 401, why: `client certificate refused: ${String(socket.authorizationError ?? "not signed by the shadowlayer CA")}`, present };
  const who = peerIdentity(cert.subject);
  if (who === undefined) return { ok: false, status: 403, why: "the client certificate names no role (OU)", present };
  if (!(FALCO_CLIENT_ROLES as readonly string[]).includes(who.role)) {
    return { ok: false, status: 403, why: `the intake admits a ${FALCO_CLIENT_ROLES.join(" or ")} certificate; this one is ${who.role}`, present };
  }
  return { ok: true, name: who.name, role: who.role };
}
