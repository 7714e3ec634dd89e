/**
 * A container's managed service, read from its labels (service-labels.ts): where the stable
 * address forwards (its backend), how its health is probed when the image has no HEALTHCHECK, and
 * which data mode a switchover of it uses.
 */
import type Docker from "dockerode";
import { DataMode } from "../../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { splitHostPort } from "../../../common/listen-address.js";
import type { Backend } from "../traffic/traffic-redirect.js";
import { SERVICE_LABELS } from "./service-labels.js";

export type HealthProbe = { kind: "tcp" } | { kind: "http"; path: string };

export interface ManagedService {
  /** The stable address (host:port); also the service's name in the proxy. */
  address: string;
  port: number;
  shadowPort: number | undefined;
  health: HealthProbe;
  mode: DataMode | undefined;
}

function port(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d{1,5}$/.test(v)) return undefined;
  const n = Number(v);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** The service a container declares, or undefined (no address label, or labels that do not parse). */
export function managedService(labels: Record<string, string> | null | undefined): ManagedService | undefined {
  const l = labels ?? {};
  const address = l[SERVICE_LABELS.address];
  const own = port(l[SERVICE_LABELS.port]);
  if (address === undefined || own === undefined) return undefined;
  const listen = splitHostPort(address);
  if (port(String(listen.port)) === undefined) return undefined;
  const h = l[SERVICE_LABELS.health] ?? "tcp";
  const health: HealthProbe = h.startsWith("http:/") ? { kind: "http", path: h.slice("http:".length) } : { kind: "tcp" };
  const m = l[SERVICE_LABELS.mode];
  const mode = m === "exclusive" ? DataMode.EXCLUSIVE : m === "shared" ? DataMode.SHARED : undefined;
  return { address, port: own, shadowPort: port(l[SERVICE_LABELS.shadowPort]), health, mode };
}

/** Where a container serves its port: loopback with host networking, else its own IP. */
export function serviceBackend(c: Docker.ContainerInspectInfo, servicePort: number): Backend {
  const net = c.HostConfig.NetworkMode ?? "";
  let host = "127.0.0.1";
  if (net !== "host") {
    const ip = Object.values(c.NetworkSettings.Networks ?? {}).find((n) => n.IPAddress !== "")?.IPAddress;
    if (ip !== undefined && ip !== "") host = ip;
  }
  return { host, port: servicePort, id: c.Id };
}

/** Exclusive when a writable volume or bind is mounted (two writers must never overlap), else shared. */
export function defaultMode(c: Docker.ContainerInspectInfo): DataMode {
  return (c.Mounts ?? []).some((m) => (m.Type === "volume" || m.Type === "bind") && m.RW) ? DataMode.EXCLUSIVE : DataMode.SHARED;
}

/** The mode a switchover uses: the command's override, else the service label, else from the mounts. */
export function chooseMode(asked: DataMode, c: Docker.ContainerInspectInfo): DataMode {
  if (asked === DataMode.EXCLUSIVE || asked === DataMode.SHARED) return asked;
  return managedService(c.Config.Labels)?.mode ?? defaultMode(c);
}
