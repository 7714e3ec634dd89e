/**
 * What the agent tells the aggregator about its node: host facts for Hello, and load, memory and
 * disk for each heartbeat. systeminformation gives memory, disks and the host well; it is kept
 * off the hot path (once at start, then once per heartbeat with disks cached).
 */
import { hostname, loadavg } from "node:os";
import si from "systeminformation";
import type { NodeContext } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { readProcFile } from "./proc-files.js";

export interface HostFacts {
  hostname: string;
  os: string;
  kernel: string;
  cpus: number;
  memoryBytes: bigint;
}

type DiskSizes = Awaited<ReturnType<typeof si.fsSize>>;

/** Disk figures change slowly and cost a `df` run: refreshed at most once a minute. */
const DISK_REFRESH_MS = 60_000;

export class NodeFacts {
  private lastCpu: { busy: number; total: number } | undefined;
  private disks: { at: number; fs: DiskSizes | undefined } | undefined;
  private hostFacts: HostFacts = { hostname: hostname(), os: "", kernel: "", cpus: 0, memoryBytes: 0n };

  constructor(private readonly procRoot: string) {}

  /** Reads the host facts once, and a first /proc/stat so the first heartbeat's load is a measured delta, not 0. */
  async start(): Promise<void> {
    this.cpuLoadPercent();
    try {
      const [os, mem, cpu] = await Promise.all([si.osInfo(), si.mem(), si.cpu()]);
      this.hostFacts = { hostname: hostname(), os: `${os.distro} ${os.release}`.trim(), kernel: os.kernel, cpus: cpu.cores, memoryBytes: BigInt(mem.total) };
    } catch {
      // Host facts are informative only: an agent without them still works.
    }
  }

  get host(): HostFacts {
    return this.hostFacts;
  }

  /** Node context for the heartbeat. */
  async context(): Promise<Omit<NodeContext, "$typeName">> {
    const [mem, fs] = await Promise.all([si.mem().catch(() => undefined), this.diskSizes()]);
    const root = fs?.find((f) => f.mount === "/") ?? fs?.[0];
    return {
      loadPercent: this.cpuLoadPercent(),
      load1: loadavg()[0] ?? 0,
      memoryTotalBytes: BigInt(mem?.total ?? 0),
      memoryAvailableBytes: BigInt(mem?.available ?? 0),
      diskTotalBytes: BigInt(Math.round(root?.size ?? 0)),
      diskUsedBytes: BigInt(Math.round(root?.used ?? 0)),
    };
  }

  private async diskSizes(): Promise<DiskSizes | undefined> {
    if (this.disks === undefined || Date.now() - this.disks.at > DISK_REFRESH_MS) this.disks = { at: Date.now(), fs: await si.fsSize().catch(() => undefined) };
    return this.disks.fs;
  }

  /**
   * CPU busy share of the node since the previous call, from /proc/stat (systeminformation's
   * currentLoad spawns a shell for the same figure on every call).
   */
  private cpuLoadPercent(): number {
    const line = readProcFile(`${this.procRoot}/stat`)?.split("\n", 1)[0] ?? "";
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    if (f.length < 4 || f.some((x) => !Number.isFinite(x))) return 0;
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    const total = f.reduce((a, b) => a + b, 0);
    const busy = total - idle;
    const prev = this.lastCpu;
    this.lastCpu = { busy, total };
    if (prev === undefined || total <= prev.total) return 0;
    return ((busy - prev.busy) / (total - prev.total)) * 100;
  }
}
