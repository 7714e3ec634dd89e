/**
 * Which feeds the aggregator reads: each a kind and a source (a path, or an https URL), named and
 * checked here from the `--feed KIND=SOURCE` flags before anything is opened.
 */
import { Code, ShadowError } from "../../common/errors.js";
import { isLoopbackHost } from "../../common/listen-address.js";

export type FeedKind = "osv" | "kev" | "epss" | "nvd";
export const KINDS: readonly FeedKind[] = ["osv", "kev", "epss", "nvd"];

export interface FeedConfig {
  name: string;
  kind: FeedKind;
  source: string;
  /** How often the source is checked (default: files 60 s, URLs 6 h). */
  refreshMs?: number;
  /** Past this age without a successful check, the feed is stale (default 24 h). */
  maxAgeMs?: number;
}

/** `kind=source` (e.g. `osv=/data/osv`, `kev=https://…`); names default to the kind (then kind-2…). */
export function parseFeedFlags(flags: readonly string[]): FeedConfig[] {
  const out: FeedConfig[] = [];
  for (const f of flags) {
    const eq = f.indexOf("=");
    const kind = f.slice(0, eq) as FeedKind;
    const source = f.slice(eq + 1);
    if (eq <= 0 || !KINDS.includes(kind) || source === "") {
      throw new ShadowError(Code.InvalidArgument, `--feed ${JSON.stringify(f)}: expected KIND=SOURCE with KIND one of ${KINDS.join(", ")} and SOURCE a path or https URL`);
    }
    checkSource(source);
    const n = out.filter((c) => c.kind === kind).length;
    out.push({ name: n === 0 ? kind : `${kind}-${n + 1}`, kind, source });
  }
  return out;
}

/** A source with a scheme is fetched; anything else is a path on this host. */
export function isUrl(source: string): boolean {
  return /^[a-z]+:\/\//i.test(source);
}

const ONLY = "only https:// URLs (or http:// to loopback) are accepted";

/** https anywhere; plain http only to loopback (tests, a local mirror). */
export function checkSource(source: string): void {
  if (!isUrl(source)) return;
  let u: URL;
  try {
    u = new URL(source);
  } catch {
    throw new ShadowError(Code.InvalidArgument, `feed source ${source} is not a valid URL`);
  }
  if (u.protocol === "https:" || isPlainLoopback(u)) return;
  throw new ShadowError(Code.InvalidArgument, `feed source ${source}: ${ONLY}`);
}

/** http:// to an address only this host answers on (the host parsed as an IP, not matched as text). */
function isPlainLoopback(u: URL): boolean {
  return u.protocol === "http:" && isLoopbackHost(u.hostname);
}

/**
 * The same rule for each redirect, checked before it is followed; and plain http to loopback
 * only from loopback, so that a remote server cannot steer the aggregator to its own local
 * services. `to` is absolute (resolved against `from`).
 */
export function checkRedirect(source: string, from: string, to: string): void {
  const next = new URL(to);
  if (next.protocol === "https:" || (isPlainLoopback(next) && isLoopbackHost(new URL(from).hostname))) return;
  throw new ShadowError(Code.FailedPrecondition, `feed source ${source} redirected to ${to}: ${ONLY}${isPlainLoopback(next) ? " (plain http to loopback only from loopback)" : ""}`);
}
