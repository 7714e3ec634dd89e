/**
 * Listen addresses: how one splits into host and port, and whether only this host can reach it.
 * Light on purpose (node: only): the configuration checks it before anything listens.
 */
import { BlockList, isIP } from "node:net";
import { Code, ShadowError } from "./errors.js";

/** `host:port`, `[v6]:port`, `:port` or a bare port (the host is then `defaultHost`). */
export function splitHostPort(address: string, defaultHost = "127.0.0.1"): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(address);
  if (m === null) return { host: defaultHost, port: Number(address) };
  return { host: m[1] ?? (m[2] || defaultHost), port: Number(m[3]) };
}

/**
 * Where a client on this host reaches a server that listens on `listen` (its port as bound): the
 * wildcard addresses become loopback, an IPv6 host is bracketed.
 */
export function dialAddress(listen: string, port: number): string {
  const { host } = splitHostPort(listen);
  const h = host === "0.0.0.0" || host === "" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `${isIP(h) === 6 ? `[${h}]` : h}:${port}`;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/**
 * 127.0.0.0/8, ::1 (in any spelling, IPv4-mapped included) or the name `localhost`. Any other name
 * is not loopback even if it resolves there today: what a name resolves to can change.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1");
  if (h.toLowerCase() === "localhost") return true;
  const family = isIP(h);
  return family !== 0 && LOOPBACK.check(h, family === 4 ? "ipv4" : "ipv6");
}

/** Whether a listen address (as splitHostPort reads it) is on loopback only. */
export function isLoopbackAddress(address: string): boolean {
  return isLoopbackHost(splitHostPort(address).host);
}

export const LOOPBACK_ONLY = "--insecure listens on loopback only (127.0.0.0/8, ::1 or localhost)";

/** Refuses to listen without TLS anywhere another host could connect. */
export function refuseInsecureListen(address: string, what: string): void {
  if (isLoopbackAddress(address)) return;
  throw new ShadowError(Code.InvalidArgument, `${what} ${address}: ${LOOPBACK_ONLY}`);
}
