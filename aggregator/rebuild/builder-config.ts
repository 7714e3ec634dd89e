/**
 * Which engines build shadows (`--builder SPEC`, repeatable) and the cgroup limits their builds
 * run under. A spec is an endpoint and comma options:
 *
 *   unix:///var/run/docker.sock,name=local,concurrency=1,cpuset=1,cpus=0.5,shares=256,memory=1g
 *   tcp://build-1.example:2376,tls=/etc/shadowlayer/builder-1,concurrency=4
 *
 * With no --builder the pool is the local engine alone, limited so that the containers it serves
 * keep their latency while a build runs (defaultBuilder).
 */
import { readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";
import { Code, ShadowError, errnoCode } from "../../common/errors.js";
import { isLoopbackHost } from "../../common/listen-address.js";
import type { BuilderConfig, BuildLimits } from "./types.js";

const FLAG = "--builder";
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
/** The CFS period the quotas are expressed in (the engine's default, 100 ms). */
export const CPU_PERIOD_US = 100_000;
/** The kernel's floor for a memory limit the engine accepts (6 MiB). */
const MIN_MEMORY = 6 * MIB;
const MAX_CONCURRENCY = 64;

/**
 * The share of one CPU a default build may use, on the last CPU: the served containers keep the
 * other CPUs whole and at least half of the last one. Measured on a 2-core host (a busybox httpd
 * on loopback at 50 req/s beside a CPU-bound step, switched on and off in 2 s windows, interleaved):
 * unpinned, the step multiplied the served p99 by 8-18 and the median by 2.4-3; pinned to the last
 * CPU at 100%, 50% or 25% of it, the median moved by 1.1-1.3x and the p99 ratio scattered between
 * 0.9 and 1.9 from run to run under other load on the host, with no order between the three. The
 * pinning is what counts; half a CPU keeps the build's own pace reasonable. `bench:rebuild`
 * reports the p99 ratio during a real recipe build.
 */
export const DEFAULT_CPU_FRACTION = 0.5;
/** cpushares of a default build: a quarter of a normal container's 1024. */
export const DEFAULT_CPU_SHARES = 256;

/** The local engine's limits on a host with `cpus` CPUs and `memBytes` of RAM. */
export function defaultLimits(cpus: number, memBytes: number): BuildLimits {
  return {
    ...(cpus > 1 ? { cpusetCpus: String(cpus - 1) } : {}),
    cpuPeriod: CPU_PERIOD_US,
    cpuQuota: Math.round(CPU_PERIOD_US * DEFAULT_CPU_FRACTION),
    cpuShares: DEFAULT_CPU_SHARES,
    memoryBytes: Math.min(GIB, Math.floor(memBytes / 4)),
  };
}

/** The embedded default: the aggregator's own engine (its --docker-socket / DOCKER_HOST), concurrency 1, limited. */
export function defaultBuilder(dockerSocket: string, host: { cpus: number; memBytes: number } = { cpus: availableParallelism(), memBytes: totalmem() }): BuilderConfig {
  return { name: "local", endpoint: `unix://${dockerSocket}`, concurrency: 1, limits: defaultLimits(host.cpus, host.memBytes) };
}

/**
 * The pool's builders from the --builder flags, or the embedded default when there are none.
 * A unix:// builder is on this host, beside the served containers: each limit its spec does not
 * set takes the default's value (`limits=none` lifts them all); a tcp:// builder is a build node
 * of its own and has only the limits its spec sets.
 */
export function parseBuilderFlags(specs: readonly string[], dockerSocket: string, host?: { cpus: number; memBytes: number }): BuilderConfig[] {
  const fallback = defaultBuilder(dockerSocket, host);
  if (specs.length === 0) return [fallback];
  const out: BuilderConfig[] = [];
  for (const spec of specs) {
    const b = parseBuilderSpec(spec, fallback.limits);
    if (out.some((o) => o.name === b.name)) throw invalid(spec, `the name ${JSON.stringify(b.name)} is used by another builder (set name=…)`);
    out.push(b);
  }
  return out;
}

function invalid(spec: string, why: string): ShadowError {
  return new ShadowError(Code.InvalidArgument, `${FLAG} ${JSON.stringify(spec)}: ${why}`);
}

const OPTIONS = ["name", "concurrency", "cpuset", "cpus", "shares", "memory", "tls", "limits"] as const;
type OptionName = (typeof OPTIONS)[number];

/** One --builder spec; `hostDefaults` are the limits a unix:// builder starts from. */
export function parseBuilderSpec(spec: string, hostDefaults: BuildLimits = {}): BuilderConfig {
  const [endpoint = "", ...rest] = spec.split(",");
  const opts = new Map<OptionName, string>();
  for (const kv of rest) {
    const eq = kv.indexOf("=");
    const key = kv.slice(0, eq) as OptionName;
    if (eq <= 0 || !OPTIONS.includes(key)) throw invalid(spec, `unknown option ${JSON.stringify(kv)} (expected KEY=VALUE with KEY one of ${OPTIONS.join(", ")})`);
    if (opts.has(key)) throw invalid(spec, `option ${key} given twice`);
    opts.set(key, kv.slice(eq + 1));
  }
  const where = parseEndpoint(spec, endpoint);
  const lifted = opts.get("limits");
  if (lifted !== undefined && lifted !== "none") throw invalid(spec, `limits=${JSON.stringify(lifted)}: only limits=none is accepted (no default limits)`);
  const base = where.kind === "unix" && lifted === undefined ? hostDefaults : {};
  const limits = parseLimits(spec, opts, base);
  const tlsDir = opts.get("tls");
  if (where.kind === "unix" && tlsDir !== undefined) throw invalid(spec, "tls= is for tcp:// endpoints (a unix socket is protected by its file permissions)");
  if (where.kind === "tcp" && tlsDir === undefined && !isLoopbackHost(where.host)) {
    throw invalid(spec, `tcp://${where.host} needs tls=DIR (ca.pem, cert.pem, key.pem, as docker --tlsverify uses): an engine API without TLS client certificates gives root on its host to anyone who reaches it`);
  }
  const name = opts.get("name") ?? (where.kind === "unix" ? where.path : `${where.host.includes(":") ? `[${where.host}]` : where.host}:${where.port}`);
  if (!/^[A-Za-z0-9/[][A-Za-z0-9._:/@[\]-]{0,127}$/.test(name)) throw invalid(spec, `name ${JSON.stringify(name)}: expected letters, digits and . _ : / @ [ ] - (at most 128)`);
  return {
    name,
    endpoint,
    concurrency: parseConcurrency(spec, opts.get("concurrency")),
    limits,
    ...(tlsDir !== undefined ? { tls: readTls(spec, tlsDir) } : {}),
  };
}

type Endpoint = { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number };

/** unix:///abs/path or tcp://host:port (a bracketed IPv6 host is fine). */
export function parseEndpoint(spec: string, endpoint: string): Endpoint {
  if (endpoint.startsWith("unix://")) {
    const path = endpoint.slice("unix://".length);
    if (!path.startsWith("/")) throw invalid(spec, `${JSON.stringify(endpoint)}: expected unix:///absolute/path/to/docker.sock`);
    return { kind: "unix", path };
  }
  const m = /^tcp:\/\/(\[[^\]]+\]|[^\s:/[\]]+):(\d{1,5})\/?$/.exec(endpoint);
  if (m === null || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw invalid(spec, `${JSON.stringify(endpoint)}: expected an endpoint unix:///path/to/docker.sock or tcp://host:port`);
  }
  return { kind: "tcp", host: (m[1] ?? "").replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]) };
}

function parseConcurrency(spec: string, text: string | undefined): number {
  if (text === undefined) return 1;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > MAX_CONCURRENCY) throw invalid(spec, `concurrency=${JSON.stringify(text)}: expected a whole number from 1 to ${MAX_CONCURRENCY}`);
  return n;
}

function parseLimits(spec: string, opts: ReadonlyMap<OptionName, string>, base: BuildLimits): BuildLimits {
  const out: BuildLimits = { ...base };
  const cpuset = opts.get("cpuset");
  if (cpuset !== undefined) {
    // Commas separate the spec's options, so a set is one CPU or one range.
    if (!/^\d{1,4}(?:-\d{1,4})?$/.test(cpuset)) throw invalid(spec, `cpuset=${JSON.stringify(cpuset)}: expected a CPU number or a range (e.g. 1 or 2-3)`);
    out.cpusetCpus = cpuset;
  }
  const cpus = opts.get("cpus");
  if (cpus !== undefined) {
    const n = Number(cpus);
    if (!/^\d+(?:\.\d+)?$/.test(cpus) || !(n >= 0.01) || n > 1024) throw invalid(spec, `cpus=${JSON.stringify(cpus)}: expected a number of CPUs from 0.01 (e.g. 0.5)`);
    out.cpuPeriod = CPU_PERIOD_US;
    out.cpuQuota = Math.round(CPU_PERIOD_US * n);
  }
  const shares = opts.get("shares");
  if (shares !== undefined) {
    const n = Number(shares);
    if (!/^\d+$/.test(shares) || n < 2 || n > 262_144) throw invalid(spec, `shares=${JSON.stringify(shares)}: expected a whole number from 2 to 262144 (1024 = a normal container)`);
    out.cpuShares = n;
  }
  const memory = opts.get("memory");
  if (memory !== undefined) out.memoryBytes = parseBytes(spec, memory);
  return out;
}

/** 512m, 1g, 1.5g, 1073741824 (binary units, as `docker run --memory` reads them). */
function parseBytes(spec: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)([bkmgt]?)$/i.exec(text);
  const unit = { "": 1, b: 1, k: 1024, m: MIB, g: GIB, t: 1024 * GIB }[(m?.[2] ?? "").toLowerCase()];
  const n = m === null || unit === undefined ? NaN : Math.floor(Number(m[1]) * unit);
  if (!(n >= MIN_MEMORY)) throw invalid(spec, `memory=${JSON.stringify(text)}: expected a size of at least 6m (e.g. 512m, 1g)`);
  return n;
}

function readTls(spec: string, dir: string): { ca: string; cert: string; key: string } {
  const read = (f: string) => {
    try {
      return readFileSync(join(dir, f), "utf8");
    } catch (err) {
      throw invalid(spec, `tls=${dir}: cannot read ${f} (${errnoCode(err) ?? String(err)}); the directory holds ca.pem, cert.pem and key.pem as docker --tlsverify uses`);
    }
  };
  return { ca: read("ca.pem"), cert: read("cert.pem"), key: read("key.pem") };
}

/** What a person should know about a builder's configuration before it is used (logged once at start). */
export function builderWarnings(c: BuilderConfig): string[] {
  if (c.endpoint.startsWith("tcp://") && c.tls === undefined) {
    return [`builder ${c.name}: ${c.endpoint} without TLS is unauthenticated: every process on this host can drive that engine`];
  }
  return [];
}

function bytesText(n: number): string {
  if (n % GIB === 0) return `${n / GIB} GiB`;
  if (n % MIB === 0) return `${n / MIB} MiB`;
  return n >= GIB ? `${(n / GIB).toFixed(2)} GiB` : `${(n / MIB).toFixed(1)} MiB`;
}

/** "cpuset 1, 0.5 CPU, shares 256, memory 1 GiB" (the `rebuilds` table's builder line), "no limits" when none. */
export function describeLimits(l: BuildLimits): string {
  const parts: string[] = [];
  if (l.cpusetCpus !== undefined) parts.push(`cpuset ${l.cpusetCpus}`);
  if (l.cpuQuota !== undefined && l.cpuQuota > 0) parts.push(`${Number((l.cpuQuota / (l.cpuPeriod ?? CPU_PERIOD_US)).toFixed(2))} CPU`);
  if (l.cpuShares !== undefined) parts.push(`shares ${l.cpuShares}`);
  if (l.memoryBytes !== undefined) parts.push(`memory ${bytesText(l.memoryBytes)}`);
  return parts.length === 0 ? "no limits" : parts.join(", ");
}
