/**
 * Records the anomaly benchmark's windows with the agent's real telemetry, in this process: the
 * LDG collector (layers of each container) and `Telemetry` (eBPF exec events when available,
 * per-layer windows), with short windows so a run stays bounded. Keeps, for the benchmark's
 * containers only, one record per layer-window (the decoded feature vector) and one per container
 * window (cgroup CPU against the CPU that reached a layer). Also tells which layer a given
 * process tree's processes are attributed to (the injections' ground truth).
 */
import { featureIndex, decodeFeatures, FEATURE_VERSION } from "../../models/features.js";
import type Docker from "dockerode";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { CgroupSampler } from "../../agent/telemetry/cgroup-sampler.js";
import { ProcessTable } from "../../agent/telemetry/process-table.js";
import { Telemetry } from "../../agent/telemetry/telemetry.js";
import { silentLogger } from "../../common/log.js";
import type { WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { ContainerWindowRecord, LayerWindowRecord } from "./anomaly-metrics.js";

const CPU_SUM = featureIndex("cpu_seconds.sum");

export interface RecorderOptions {
  docker: Docker;
  dockerRoot: string;
  windowMs: number;
  sampleMs: number;
}

function ms(t: { seconds: bigint; nanos: number } | undefined): number {
  return t === undefined ? 0 : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

export class Recorder {
  readonly layerWindows: LayerWindowRecord[] = [];
  readonly containerWindows: ContainerWindowRecord[] = [];
  /** Windows of another feature version (none expected). */
  skipped = 0;
  private readonly ids = new Map<string, string>();
  private readonly table: ProcessTable;
  private readonly collector: LdgCollector;
  private readonly telemetry: Telemetry;

  private constructor(o: RecorderOptions) {
    const metrics = new AgentMetrics();
    this.table = new ProcessTable("/proc", new CgroupSampler());
    this.collector = new LdgCollector({ docker: o.docker, node: "anb", procRoot: "/proc", dockerRoot: o.dockerRoot, log: silentLogger(), metrics, processes: this.table });
    this.telemetry = new Telemetry({ node: "anb", procRoot: "/proc", collector: this.collector, processes: this.table, log: silentLogger(), metrics, execSource: "auto", windowMs: o.windowMs, sampleMs: o.sampleMs });
    this.telemetry.on("window", (w) => this.onWindow(w));
  }

  /** Starts recording the listed containers (name by id); they must be running. */
  static async start(o: RecorderOptions, containers: ReadonlyMap<string, string>): Promise<Recorder> {
    const r = new Recorder(o);
    for (const [id, name] of containers) r.ids.set(id, name);
    await r.collector.refreshAll();
    const seen = r.collector.running().filter((c) => r.ids.has(c.id)).length;
    if (seen !== r.ids.size) throw new Error(`the collector sees ${seen} of the benchmark's ${r.ids.size} containers`);
    await r.telemetry.start();
    return r;
  }

  get execSource(): string {
    return this.telemetry.activeExecSource;
  }

  /** Calls `fn` after every emitted batch of windows (a window boundary). */
  onBoundary(fn: () => void): () => void {
    this.telemetry.on("windows", fn);
    return () => this.telemetry.off("windows", fn);
  }

  async stop(): Promise<void> {
    await this.telemetry.stop();
  }

  /** The layer id of a container's layer holding `path` (for the injections' declared layer). */
  layerOfPath(containerId: string, path: string): string | undefined {
    const r = this.collector.running().find((c) => c.id === containerId);
    return r === undefined ? undefined : this.collector.attributePath(r, path).layerId;
  }

  /**
   * The layers the live processes of `rootPid`'s tree in the container are attributed to (from the
   * telemetry's process table as of its last tick: the same attribution the windows use).
   */
  layersOfTree(containerId: string, rootPid: number): string[] {
    const r = this.collector.running().find((c) => c.id === containerId);
    if (r === undefined) return [];
    const procs = this.table.current(containerId);
    const parent = new Map(procs.map((p) => [p.info.pid, p.info.ppid]));
    const out = new Set<string>();
    for (const p of procs) {
      let pid = p.info.pid;
      for (let depth = 0; depth < 64 && pid > 1; depth++) {
        if (pid === rootPid) {
          out.add(this.collector.attributeProcess(r, p.info).layerId);
          break;
        }
        pid = parent.get(pid) ?? 0;
      }
    }
    return [...out];
  }

  private onWindow(w: WindowSummary): void {
    const name = this.ids.get(w.containerId);
    if (name === undefined) return;
    if (w.featureVersion !== FEATURE_VERSION) {
      this.skipped++;
      return;
    }
    const start = ms(w.start);
    const end = ms(w.end);
    const seconds = Math.max(0.001, (end - start) / 1000);
    let layerCpu = 0;
    for (const l of w.layers) {
      const vector = decodeFeatures(l.featuresF64le);
      layerCpu += Number.isFinite(vector[CPU_SUM]) ? vector[CPU_SUM]! : 0;
      this.layerWindows.push({ container: name, containerId: w.containerId, layerId: l.layerId, layerName: l.layerName, start, end, seconds, vector });
    }
    const cpu = w.cgroup?.cpuSeconds;
    const share = w.cpuAttributedShare;
    this.containerWindows.push({
      container: name,
      start,
      end,
      cgroupCpuS: cpu?.available ? cpu.value : null,
      layerCpuS: layerCpu,
      reportedShare: share?.available ? share.value : null,
    });
  }
}
