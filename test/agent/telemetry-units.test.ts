/**
 * The telemetry's arithmetic and bookkeeping without containers: /proc parsers on files captured
 * here, window features, exactly-once storage at the aggregator, and pid recycling on a fake
 * /proc (the one thing a real host cannot be made to do on demand). The spool: spool.test.ts.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Level } from "level";
import type { Attribution } from "../../agent/layers/ldg-builder.js";
import type { LdgCollector, RunningContainer } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { CgroupSampler } from "../../agent/telemetry/cgroup-sampler.js";
import { parseIo, parseStatSample, parseStatusCtx } from "../../agent/telemetry/proc-sampler.js";
import { ProcessTable } from "../../agent/telemetry/process-table.js";
import { cgroupFeatures, netFeatures } from "../../agent/telemetry/container-context.js";
import { ExecSource } from "../../agent/telemetry/exec-source.js";
import { Telemetry } from "../../agent/telemetry/telemetry.js";
import { cpuAttributedShare, WindowBuilder } from "../../agent/telemetry/window-builder.js";
import type { ProcessExitEvent } from "../../agent/telemetry/exec-ebpf.js";
import { emptyMetrics, LayerWindow } from "../../agent/telemetry/layer-window.js";
import { TelemetryStore } from "../../aggregator/store/telemetry-store.js";
import { Code, ShadowError } from "../../common/errors.js";
import { silentLogger } from "../../common/log.js";
import { decodeFeatures, encodeFeatures, FEATURE_COUNT, FEATURE_NAMES, featureIndex, METRIC_INDEX, METRICS, namedFeatures, type MetricName } from "../../models/features.js";
import { CgroupFeaturesSchema, GaugeSchema, TelemetryItemSchema, WindowSummarySchema, type WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";

/** A layer's decoded feature vector (empty when the layer is absent). */
const feat = (l: { featuresF64le: Uint8Array } | undefined): number[] => (l === undefined ? [] : decodeFeatures(l.featuresF64le));
const fixture = (p: string) => readFileSync(new URL(`../../../test/fixtures/${p}`, import.meta.url), "utf8");
const tmp = mkdtempSync(join(tmpdir(), "sl-tel-units-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("proc-sampler parsers (files captured on this host)", () => {
  it("reads CPU, faults, threads, RSS and start time from stat", () => {
    const s = parseStatSample(fixture("proc/stat-busybox-sleep.txt"));
    assert.deepEqual(s, { comm: "sleep", state: "S", ppid: 4697, minflt: 917, majflt: 0, cpuTicks: 4, threads: 1, startTime: 283388n, rssPages: 316, startStack: 140720929788896 });
  });
  it("survives a comm with spaces and parentheses and refuses short or garbled lines", () => {
    const line = "77 (a) b (c) R 1 77 77 0 -1 0 5 0 6 0 7 8 0 0 20 0 3 0 999 100 42 0";
    assert.equal(parseStatSample(line)?.comm, "a) b (c");
    assert.equal(parseStatSample(line)?.cpuTicks, 15);
    assert.equal(parseStatSample(line)?.threads, 3);
    assert.equal(parseStatSample(line)?.startStack, 0, "a line that ends before startstack");
    assert.equal(parseStatSample("1 (x) S 1 2 3"), undefined);
    assert.equal(parseStatSample("no parens at all"), undefined);
    assert.equal(parseStatSample("1 (x) S 1 1 1 0 -1 0 a 0 0 0 1 1 0 0 20 0 1 0 5 0 1 0"), undefined);
  });
  it("reads context switches from status and byte counts from io", () => {
    assert.deepEqual(parseStatusCtx(fixture("proc/status-busybox.txt")), { voluntary: 14, involuntary: 192 });
    assert.deepEqual(parseIo(fixture("proc/io-busybox.txt")), { rchar: 55196, wchar: 7741, readBytes: 0, writeBytes: 0 });
    assert.equal(parseStatusCtx("Name:\tx\n"), undefined);
    assert.equal(parseIo("rchar: 1\n"), undefined);
  });
});

describe("feature vector (models/features.ts) and per-layer windows", () => {
  it("has sum/mean/max/rate per metric then the counts, with unique names", () => {
    assert.equal(FEATURE_COUNT, METRICS.length * 4 + 6);
    assert.equal(new Set(FEATURE_NAMES).size, FEATURE_COUNT);
    assert.equal(FEATURE_NAMES[0], "cpu_seconds.sum");
    assert.throws(() => featureIndex("nope"), RangeError);
    // The wire form: little-endian float64, exactly.
    const v = [0, 1.5, -2, 1e300, Number.MIN_VALUE];
    const bytes = encodeFeatures(v);
    assert.equal(bytes.length, 40);
    assert.deepEqual([...bytes.slice(8, 16)], [0, 0, 0, 0, 0, 0, 0xf8, 0x3f]);
    assert.deepEqual(decodeFeatures(bytes), v);
    assert.throws(() => decodeFeatures(new Uint8Array(7)), RangeError);
  });

  it("counters sum their deltas; gauges report the last value, the mean and growth per second", () => {
    const w = new LayerWindow();
    const cpu = featureIndex("cpu_seconds.sum");
    const rss = featureIndex("rss_bytes.sum");
    for (const [d, r] of [
      [0.5, 100],
      [0.25, 200],
      [0.25, 300],
      [0, 400],
    ] as const) {
      const v = emptyMetrics();
      v[METRIC_INDEX.cpu_seconds] = d; // a counter
      v[METRIC_INDEX.rss_bytes] = r; // a gauge
      w.addTick(v, 2, true);
    }
    w.counts.exec_count = 3;
    // Ticks 0.5 s apart: 1.5 s between the first and the last sample.
    const f = w.features(4, 2, 1.5);
    assert.equal(f[cpu], 1); // sum
    assert.equal(f[cpu + 1], 0.25); // mean per tick
    assert.equal(f[cpu + 2], 0.5); // busiest tick
    assert.equal(f[cpu + 3], 0.5); // per second
    assert.equal(f[rss], 400); // last
    assert.equal(f[rss + 1], 250); // mean
    assert.equal(f[rss + 2], 400); // max
    assert.equal(f[rss + 3], 200); // (400 - 100) / 1.5 s between the samples, not the window's 2 s
    assert.equal(f[featureIndex("process_count")], 2);
    assert.equal(f[featureIndex("exec_count")], 3);
  });

  it("a layer that appears late counts zeros before it (means and growth stay honest)", () => {
    const w = new LayerWindow();
    w.addEmptyTick();
    w.addEmptyTick();
    const v = emptyMetrics();
    v[METRIC_INDEX.rss_bytes] = 1000;
    w.addTick(v, 1, false);
    const f = w.features(3, 3, 2);
    const rss = featureIndex("rss_bytes.sum");
    assert.equal(f[rss + 1], 1000 / 3);
    assert.equal(f[rss + 3], 1000 / 2);
    assert.equal(f[featureIndex("process_count")], 1 / 3);
  });
});

describe("window builder", () => {
  const names = { container: (id: string) => ({ name: `name-${id}` }), layerName: (_id: string, l: string) => `layer ${l}` } as unknown as Pick<LdgCollector, "container" | "layerName">;
  const tick = (rss: number, n: number) => {
    const v = emptyMetrics();
    v[METRIC_INDEX.rss_bytes] = rss;
    return { v, n };
  };

  it("counts the ticks before a layer's first process as empty, and ends on the tick nearest the window", () => {
    const b = new WindowBuilder({ node: "n", windowMs: 3000, tickMs: 1000, names });
    b.begin(new Date(0));
    b.addTick("a", new Map([["base", tick(100, 1)]]));
    b.endTick(new Date(1000));
    b.addTick("a", new Map([["base", tick(100, 1)], ["late", tick(600, 2)]]));
    b.endTick(new Date(2000));
    assert.equal(b.due(new Date(2000)), false);
    b.addTick("a", new Map([["base", tick(100, 1)]]));
    b.endTick(new Date(3000));
    assert.equal(b.due(new Date(2500)), true, "within half a tick of 3 s");
    const [w, ...rest] = b.flush([{ id: "a", name: "a-name" }], new Date(3000));
    assert.equal(rest.length, 0);
    assert.equal(w?.ticks, 3);
    assert.equal(w?.containerName, "a-name");
    const late = namedFeatures(feat(w?.layers.find((l) => l.layerId === "late")));
    assert.equal(late["process_count"], 2 / 3, "2 processes in 1 of 3 ticks");
    assert.equal(late["rss_bytes.mean"], 200);
    assert.equal(late["rss_bytes.sum"], 0, "no process left at the last tick");
    assert.equal(w?.layers.find((l) => l.layerId === "late")?.layerName, "layer late");
    // The next window starts empty, where this one ended.
    assert.deepEqual(b.flush([{ id: "a", name: "a-name" }], new Date(4000))[0]?.layers, []);
    assert.equal(b.flush([{ id: "a", name: "a-name" }], new Date(5000))[0]?.start?.seconds, 4n);
  });

  it("ends a stopped container's window at once, once, and leaves the running ones to the window's end", () => {
    const b = new WindowBuilder({ node: "n", windowMs: 10_000, tickMs: 1000, names });
    b.begin(new Date(0));
    b.addTick("a", new Map([["l", tick(1, 1)]]));
    b.addTick("b", new Map([["l", tick(1, 1)]]));
    b.endTick(new Date(1000));
    const gone = b.endGone(new Set(["a"]), new Date(1000));
    assert.deepEqual(gone.map((w) => [w.containerId, w.containerName, w.ticks]), [["b", "name-b", 1]]);
    assert.deepEqual(b.endGone(new Set(["a"]), new Date(1000)), []);
    assert.deepEqual(b.flush([{ id: "a", name: "a" }, { id: "b", name: "b" }], new Date(2000)).map((w) => w.containerId), ["a"]);
  });
});

describe("exec source choice (no eBPF here: bpftrace is given a path that does not exist)", () => {
  const source = (choice: "auto" | "ebpf" | "proc") =>
    new ExecSource({ procRoot: "/proc", log: silentLogger(), metrics: new AgentMetrics(), choice, bpftrace: "/nonexistent/bpftrace", pollMs: 1000, onExec: () => assert.fail("no eBPF events expected") });

  it("polls when configured to, and says so", async () => {
    const s = source("proc");
    await s.start();
    assert.deepEqual([s.kind, s.reason, s.counters], ["proc-poll", "configured (--exec-source proc)", undefined]);
    await s.stop();
  });

  it("falls back to polling under auto, with the reason", async () => {
    const s = source("auto");
    await s.start();
    assert.equal(s.kind, "proc-poll");
    assert.match(s.reason, /bpftrace not found or not executable at \/nonexistent\/bpftrace/);
    await s.stop();
  });

  it("refuses to start when eBPF is required", async () => {
    await assert.rejects(source("ebpf").start(), (e: unknown) => e instanceof ShadowError && e.code === Code.FailedPrecondition && /eBPF exec events were required but cannot run/.test(e.message));
  });
});

describe("cgroup and network features", () => {
  it("an unavailable figure is marked unavailable with its reason, never 0", () => {
    const base = {
      cpuUsageNs: 1e9, cpuPeriods: null, cpuThrottledPeriods: null, cpuThrottledNs: null, memoryBytes: null, memoryWorkingSetBytes: null,
      memoryLimitBytes: null, memoryUnlimited: true, oomEvents: null, oomKills: null, underOom: null, pidsCurrent: 3, pidsLimit: null, pidsUnlimited: true,
      unavailable: { memoryBytes: "memory controller not mounted", cpuThrottledPeriods: "cpu controller not enabled" },
    };
    const f = cgroupFeatures(base, { ...base, cpuUsageNs: 3.5e9 }, "v2");
    assert.deepEqual([f.cpuSeconds?.available, f.cpuSeconds?.value], [true, 2.5]);
    assert.deepEqual([f.memoryBytes?.available, f.memoryBytes?.reason], [false, "memory controller not mounted"]);
    assert.equal(f.throttledPeriods?.available, false);
    assert.equal(f.memoryUnlimited, true);
    assert.equal(f.pids?.value, 3);
    assert.equal(f.version, "v2");
    assert.equal(cgroupFeatures(undefined, undefined).cpuSeconds?.available, false);
  });

  it("a host-network container's counters are marked shared and not attributed", () => {
    const s = { netns: 1, shared: true, rxBytes: 5e9, rxPackets: 1, txBytes: 5e9, txPackets: 1, extRxBytes: 0, extRxPackets: 0, extTxBytes: 0, extTxPackets: 0, tcpByState: {}, tcpSockets: new Map(), unavailable: {} };
    const f = netFeatures(s, s);
    assert.equal(f.shared, true);
    assert.equal(f.rxBytes?.available, false);
    assert.match(f.rxBytes?.reason ?? "", /host network/);
    const own = netFeatures({ ...s, shared: false, rxBytes: 100 }, { ...s, shared: false, rxBytes: 350 });
    assert.deepEqual([own.rxBytes?.available, own.rxBytes?.value], [true, 250]);
  });
});

const item = (spoolId: string, seq: bigint, containerId = "a".repeat(64)) =>
  create(TelemetryItemSchema, { spoolId, spoolSeq: seq, body: { case: "windows", value: { windows: [create(WindowSummarySchema, { node: "n1", containerId })] } } });

describe("aggregator telemetry store", () => {
  it("stores an item once: a re-send after a reconnect is dropped, another spool is not", async () => {
    const db = new Level<string, Uint8Array>(join(tmp, "agg-db"), { keyEncoding: "utf8", valueEncoding: "view" });
    await db.open();
    const t = await TelemetryStore.open(db);
    assert.equal(await t.put("n1", item("s1", 1n)), true);
    assert.equal(await t.put("n1", item("s1", 2n)), true);
    assert.equal(await t.put("n1", item("s1", 2n)), false, "repeat");
    assert.equal(await t.put("n1", item("s1", 1n)), false, "older repeat");
    assert.equal(await t.put("n1", item("s2", 1n)), true, "a new spool (fresh agent data dir)");
    await assert.rejects(t.put("n2", item("s3", 1n)), /stream of node/);
    await assert.rejects(t.put("n1", create(TelemetryItemSchema, { spoolId: "s1", spoolSeq: 9n })), /empty telemetry item/);
    assert.equal((await t.windows({ node: "n1" }, 100)).length, 3);
    // Reopened, it still knows what it has.
    const again = await TelemetryStore.open(db);
    assert.equal(await again.put("n1", item("s1", 2n)), false);
    assert.equal(again.stats("n1").windows, 3);
    await db.close();
  });
});

/** A fake /proc with one container whose cgroup (v2) lists its pids. */
/** What a fake process's /proc files say; the fields left out keep the values of an idle process. */
interface FakeProc {
  start: number;
  ticks: number;
  comm: string;
  exe: string;
  stime?: number;
  minflt?: number;
  majflt?: number;
  threads?: number;
  rssPages?: number;
  ctxVoluntary?: number;
  ctxInvoluntary?: number;
  rchar?: number;
  wchar?: number;
  readBytes?: number;
  writeBytes?: number;
  /** /proc/<pid>/io unreadable (as for another user's process without root). */
  noIo?: boolean;
}

/** The fake container's mount namespace (every fake process lives in it). */
const FAKE_MNTNS = 4026532900;

function fakeHost(root: string, id: string): { proc: string; cg: string; writeProc: (pid: number, o: FakeProc) => void; setPids: (pids: number[]) => void; setCpu: (usec: number) => void } {
  const proc = join(root, "proc");
  const cg = join(root, "cg");
  const dir = join(cg, "docker", id);
  mkdirSync(dir, { recursive: true });
  mkdirSync(proc, { recursive: true });
  writeFileSync(join(proc, "uptime"), "4000.00 100.00\n");
  const writeProc = (pid: number, o: FakeProc) => {
    const p = join(proc, String(pid));
    rmSync(p, { recursive: true, force: true });
    mkdirSync(join(p, "fd"), { recursive: true });
    writeFileSync(join(p, "fd", "0"), "");
    // Fields 10 (minflt), 12 (majflt), 14-15 (utime, stime), 20 (threads), 22 (start), 24 (rss pages).
    writeFileSync(join(p, "stat"), `${pid} (${o.comm}) S 1 ${pid} ${pid} 0 -1 0 ${o.minflt ?? 10} 0 ${o.majflt ?? 0} 0 ${o.ticks} ${o.stime ?? 0} 0 0 20 0 ${o.threads ?? 1} 0 ${o.start} 100 ${o.rssPages ?? 50} 0`);
    writeFileSync(join(p, "status"), `Name:\t${o.comm}\nvoluntary_ctxt_switches:\t${o.ctxVoluntary ?? 1}\nnonvoluntary_ctxt_switches:\t${o.ctxInvoluntary ?? 1}\n`);
    if (o.noIo !== true) writeFileSync(join(p, "io"), `rchar: ${o.rchar ?? 10}\nwchar: ${o.wchar ?? 10}\nsyscr: 1\nsyscw: 1\nread_bytes: ${o.readBytes ?? 0}\nwrite_bytes: ${o.writeBytes ?? 0}\n`);
    mkdirSync(join(p, "ns"));
    symlinkSync(`mnt:[${FAKE_MNTNS}]`, join(p, "ns", "mnt"));
    writeFileSync(join(p, "cmdline"), `${o.comm}\0`);
    writeFileSync(join(p, "cgroup"), `0::/docker/${id}\n`);
    writeFileSync(join(p, "maps"), "");
    symlinkSync(o.exe, join(p, "exe"));
  };
  return {
    proc,
    cg,
    writeProc,
    setPids: (pids) => writeFileSync(join(dir, "cgroup.procs"), pids.map((p) => `${p}\n`).join("")),
    setCpu: (usec) => writeFileSync(join(dir, "cpu.stat"), `usage_usec ${usec}\nuser_usec 0\nsystem_usec 0\n`),
  };
}

/**
 * Telemetry over a fake host, with a test double for the LDG collector (the fake /proc has no
 * engine behind it): every process is attributed to a layer named after its executable.
 */
function fakeTelemetry(h: ReturnType<typeof fakeHost>, id: string): { tel: Telemetry; table: ProcessTable; windows: WindowSummary[] } {
  const mountinfo = `30 25 0:26 / ${h.cg} rw,nosuid - cgroup2 cgroup2 rw\n`;
  const table = new ProcessTable(h.proc, new CgroupSampler({ procRoot: h.proc, cgroupRoot: h.cg, mountinfoText: mountinfo }));
  const running: RunningContainer = { id, name: "fake", pid: 1 } as RunningContainer;
  const collector = Object.assign(new EventEmitter(), {
    running: () => [running],
    container: () => running,
    attributeProcess: (_r: RunningContainer, p: { exe: string }): Attribution => ({ layerId: `layer:${p.exe}`, drift: false, reason: "" }),
    attributePath: (_r: RunningContainer, path: string) => ({ layerId: `layer:${path}`, drift: false, reason: "", path }),
    libraryLayers: () => [],
    layerName: () => "",
  }) as unknown as LdgCollector;
  const tel = new Telemetry({ node: "n", procRoot: h.proc, collector, processes: table, log: silentLogger(), metrics: new AgentMetrics(), sampleMs: 1000, windowMs: 1_000_000, execSource: "proc" });
  const windows: WindowSummary[] = [];
  tel.on("window", (w) => windows.push(w));
  return { tel, table, windows };
}

describe("the layer vector from a fake /proc", () => {
  const id = "e".repeat(64);

  it("takes each metric from the /proc field models/FEATURES.md names for it", () => {
    const h = fakeHost(join(tmp, "fields"), id);
    h.writeProc(1, { start: 10, ticks: 0, comm: "init", exe: "/bin/init" });
    const before = { start: 1000, ticks: 0, comm: "work", exe: "/bin/work", stime: 0, minflt: 100, majflt: 5, ctxVoluntary: 40, ctxInvoluntary: 60, rchar: 1000, wchar: 2000, readBytes: 4096, writeBytes: 8192 };
    h.writeProc(100, before);
    h.setPids([1, 100]);
    h.setCpu(1);
    const { tel, table, windows } = fakeTelemetry(h, id);
    tel.tick(new Date(0)); // first look: a baseline, no deltas
    // Every counter moves by its own amount, every gauge takes its own value.
    const after = { ...before, ticks: 7, stime: 3, minflt: 111, majflt: 18, threads: 17, rssPages: 19, ctxVoluntary: 63, ctxInvoluntary: 89, rchar: 1031, wchar: 2037, readBytes: 4137, writeBytes: 8235 };
    h.writeProc(100, after);
    h.setCpu(2);
    tel.tick(new Date(1000));
    const fds = table.current(id).find((t) => t.info.pid === 100)?.detail.fds;
    // I/O readings are judged one tick late (models/FEATURES.md, "A child's I/O").
    h.setCpu(3);
    tel.tick(new Date(1500));
    tel.flush(new Date(2000));
    const layer = windows.find((w) => w.containerId === id)?.layers.find((l) => l.layerId === "layer:/bin/work");
    assert.ok(layer, "the work process's layer has a window");
    const named = namedFeatures(feat(layer));
    // Counters: the window's increase (`.sum`); gauges: the value at the last tick (also `.sum`).
    const expected: Record<MetricName, number | undefined> = {
      cpu_seconds: 0.1,
      rss_bytes: 19 * 4096,
      threads: 17,
      open_fds: fds,
      read_bytes: 31,
      write_bytes: 37,
      disk_read_bytes: 41,
      disk_write_bytes: 43,
      ctx_switches_voluntary: 23,
      ctx_switches_involuntary: 29,
      minor_faults: 11,
      major_faults: 13,
    };
    for (const m of METRICS) assert.equal(named[`${m.name}.sum`], expected[m.name], m.name);
    assert.equal(layer.cpuSeconds, 0.1);
    assert.equal(layer.readBytes, 31);
    assert.equal(layer.writeBytes, 37);
    assert.equal(layer.rssBytes, 50 * 4096, "the peak (rss_bytes.max): the first tick's 50 pages");
  });
});

describe("pid recycling (fake /proc)", () => {
  const id = "c".repeat(64);

  it("a pid reused by another process between two samples is a new process, not the old one continued", () => {
    const h = fakeHost(join(tmp, "recycle"), id);
    h.writeProc(100, { start: 1000, ticks: 500, comm: "old", exe: "/bin/old" });
    h.writeProc(1, { start: 10, ticks: 0, comm: "init", exe: "/bin/init" });
    h.setPids([1, 100]);
    h.setCpu(1);
    const { tel, table, windows } = fakeTelemetry(h, id);

    const first = table.refresh(id, 1, true).find((t) => t.info.pid === 100);
    tel.tick(new Date(0));
    // pid 100 exits; a new process gets pid 100 (later start time, little CPU so far).
    h.writeProc(100, { start: 480_000, ticks: 3, comm: "new", exe: "/bin/new" });
    h.setCpu(2);
    writeFileSync(join(h.proc, "uptime"), "4900.00 100.00\n");
    tel.tick(new Date(1000));
    const second = table.current(id).find((t) => t.info.pid === 100);
    assert.notEqual(second?.key, first?.key, "a different identity");
    assert.equal(second?.info.exe, "/bin/new", "its executable was read anew");
    tel.flush(new Date(2000));
    const w = windows.find((x) => x.containerId === id);
    const cpuSum = featureIndex("cpu_seconds.sum");
    const oldLayer = w?.layers.find((l) => l.layerId === "layer:/bin/old");
    const newLayer = w?.layers.find((l) => l.layerId === "layer:/bin/new");
    // The old process's 5 s of CPU were before the window (baseline); nothing is carried over to the
    // new one, and nothing negative appears.
    assert.equal(feat(oldLayer)[cpuSum], 0);
    assert.equal(feat(newLayer)[cpuSum], 0.03, "only the new process's own 3 ticks");
    assert.equal(feat(newLayer)[featureIndex("process_starts")], 1);
  });

  it("a pid listed by the cgroup that vanished before its stat was read is skipped and counted", () => {
    const h = fakeHost(join(tmp, "vanish"), id);
    h.writeProc(1, { start: 10, ticks: 0, comm: "init", exe: "/bin/init" });
    h.setPids([1, 4242]);
    h.setCpu(1);
    const table = new ProcessTable(h.proc, new CgroupSampler({ procRoot: h.proc, cgroupRoot: h.cg, mountinfoText: `30 25 0:26 / ${h.cg} rw - cgroup2 cgroup2 rw\n` }));
    const procs = table.refresh(id, 1, false);
    assert.deepEqual(procs.map((p) => p.info.pid), [1]);
    assert.equal(table.stats.vanished, 1);
    assert.equal(table.ranSince(id, 1, "x"), true, "first look");
    assert.equal(table.ranSince(id, 1, "x"), false, "CPU counter did not move");
    h.setCpu(5);
    assert.equal(table.ranSince(id, 1, "x"), true);
  });
});

describe("layer-window-v2: gauge rates, unavailable features, attributed CPU share", () => {
  const names = { container: (id: string) => ({ name: `name-${id}` }), layerName: () => "" } as unknown as Pick<LdgCollector, "container" | "layerName">;

  it("a 2 MB/s leak reads 2 MB/s with two ticks per window (growth over the time between the samples)", () => {
    const b = new WindowBuilder({ node: "n", windowMs: 2000, tickMs: 1000, names });
    b.begin(new Date(0));
    const out: WindowSummary[] = [];
    for (let t = 1; t <= 4; t++) {
      const v = emptyMetrics();
      v[METRIC_INDEX.rss_bytes] = 50e6 + 2e6 * t;
      b.addTick("a", new Map([["l", { v, n: 1 }]]));
      b.endTick(new Date(t * 1000));
      if (b.due(new Date(t * 1000))) out.push(...b.flush([{ id: "a", name: "a" }], new Date(t * 1000)));
    }
    assert.equal(out.length, 2);
    for (const w of out) assert.equal(namedFeatures(feat(w.layers[0]))["rss_bytes.rate"], 2e6);
    // One sample in a window: no growth can be measured, and none is made up.
    const one = new WindowBuilder({ node: "n", windowMs: 1000, tickMs: 1000, names });
    one.begin(new Date(0));
    one.addTick("a", new Map([["l", { v: emptyMetrics(), n: 1 }]]));
    one.endTick(new Date(1000));
    const f = namedFeatures(feat(one.flush([{ id: "a", name: "a" }], new Date(1000))[0]?.layers[0]));
    assert.ok(Number.isNaN(f["rss_bytes.rate"]));
    assert.equal(f["rss_bytes.sum"], 0);
  });

  it("a feature not measured is NaN in the vector (not 0), for that layer and window only", () => {
    const b = new WindowBuilder({ node: "n", windowMs: 2000, tickMs: 1000, names });
    b.begin(new Date(0));
    b.layer("a", "l").metricUnavailable(METRIC_INDEX.read_bytes);
    b.countUnavailable("a", "new_connections");
    b.addTick("a", new Map([["l", { v: emptyMetrics(), n: 1 }], ["m", { v: emptyMetrics(), n: 1 }]]));
    b.endTick(new Date(1000));
    const [w] = b.flush([{ id: "a", name: "a" }], new Date(1000));
    const l = namedFeatures(feat(w?.layers.find((x) => x.layerId === "l")));
    const m = namedFeatures(feat(w?.layers.find((x) => x.layerId === "m")));
    for (const s of ["sum", "mean", "max", "rate"]) assert.ok(Number.isNaN(l[`read_bytes.${s}`]), s);
    assert.equal(l["write_bytes.sum"], 0);
    assert.equal(m["read_bytes.sum"], 0, "another layer measured it");
    assert.ok(Number.isNaN(l["new_connections"]) && Number.isNaN(m["new_connections"]), "the socket table is the container's");
    assert.equal(l["listen_sockets"], 0);
    // The next window measures again.
    b.addTick("a", new Map([["l", { v: emptyMetrics(), n: 1 }]]));
    b.endTick(new Date(2000));
    const next = namedFeatures(feat(b.flush([{ id: "a", name: "a" }], new Date(2000))[0]?.layers[0]));
    assert.equal(next["read_bytes.sum"], 0);
    assert.equal(next["new_connections"], 0);
  });

  it("cpu_attributed_share is the layers' CPU over the cgroup's, unavailable with a reason otherwise", () => {
    const cg = (cpu: { available: boolean; value?: number; reason?: string }) => create(CgroupFeaturesSchema, { cpuSeconds: create(GaugeSchema, cpu) });
    assert.deepEqual([cpuAttributedShare(0.9, cg({ available: true, value: 1 })).available, cpuAttributedShare(0.9, cg({ available: true, value: 1 })).value], [true, 0.9]);
    assert.equal(cpuAttributedShare(1.2, cg({ available: true, value: 1 })).value, 1, "capped: an exit charged early in a window may have run in the previous one");
    assert.match(cpuAttributedShare(0, cg({ available: true, value: 0 })).reason, /did not move/);
    assert.match(cpuAttributedShare(0, cg({ available: false, reason: "cpu.stat missing" })).reason, /cpu\.stat missing/);
    assert.equal(cpuAttributedShare(0, undefined).available, false);
  });
});

describe("charging at exit and a child's I/O on its own layer (fake /proc, kernel events fed by hand)", () => {
  const id = "d".repeat(64);
  const exitEv = (pid: number, ppid: number, start: number, o: Partial<ProcessExitEvent>): ProcessExitEvent => ({
    pid, ppid, mntns: FAKE_MNTNS, startTimeTicks: BigInt(start), monoNs: process.hrtime.bigint(),
    cpuNs: 0, rchar: 0, wchar: 0, readBytes: 0, writeBytes: 0, minflt: 0, majflt: 0, nvcsw: 0, nivcsw: 0, ...o,
  });

  it("charges each process once, to its executable's layer, and takes a reaped child's I/O off its reaper", () => {
    const h = fakeHost(join(tmp, "exits"), id);
    const shell = { start: 10, ticks: 0, comm: "sh", exe: "/bin/sh", rchar: 1000 };
    h.writeProc(1, shell);
    h.setPids([1]);
    h.setCpu(1_000_000);
    const { tel, windows } = fakeTelemetry(h, id);
    tel.tick(new Date(0)); // baseline

    // A job from another layer starts and is sampled once (all it did so far is this window's).
    h.writeProc(200, { start: 400_100, ticks: 2, comm: "job", exe: "/bin/job", rchar: 500 });
    h.setPids([1, 200]);
    h.setCpu(1_020_000);
    tel.tick(new Date(1000));

    // The job exits (a zombie still listed), and is reaped: its 3000 bytes land in the shell's io.
    const lc = tel.lifecycle;
    lc.onExit(exitEv(200, 1, 400_100, { cpuNs: 50e6, rchar: 3000 }));
    lc.onExit(exitEv(200, 1, 400_100, { cpuNs: 50e6, rchar: 3000 })); // the same exit twice
    // A subshell forked without exec, never sampled: the shell's layer.
    lc.onFork({ parent: 1, child: 300, mntns: FAKE_MNTNS, monoNs: process.hrtime.bigint() });
    lc.onExit(exitEv(300, 1, 400_120, { cpuNs: 20e6, rchar: 100 }));
    // A tool exec'd from a third layer, never sampled: its exec's layer.
    lc.onExec(301, { containerId: id, layerId: "layer:/bin/tool", startTimeTicks: 400_150n, monoNs: process.hrtime.bigint() });
    lc.onExit(exitEv(301, 1, 400_150, { cpuNs: 30e6, rchar: 200 }));
    // Another subshell whose exit is seen before the shell reaps it: the shell's figures dip first.
    lc.onFork({ parent: 1, child: 302, mntns: FAKE_MNTNS, monoNs: process.hrtime.bigint() });
    lc.onExit(exitEv(302, 1, 400_160, { cpuNs: 10e6, rchar: 700 }));
    // (Its stat moves too: the agent re-reads io only for a process that ran.)
    h.writeProc(1, { ...shell, ticks: 1, rchar: 1000 + 3000 + 100 + 200 });
    h.setCpu(1_100_000);
    tel.tick(new Date(2000));

    // 302 is reaped, and the shell reads 50 bytes of its own.
    h.writeProc(1, { ...shell, ticks: 2, rchar: 1000 + 3000 + 100 + 200 + 700 + 50 });
    h.setPids([1]);
    h.setCpu(1_150_000);
    tel.tick(new Date(3000));
    // A reading is judged one tick late (a child's exit event may trail its reap): one more tick.
    h.setCpu(1_150_001);
    tel.tick(new Date(4000));
    tel.flush(new Date(4000));

    const w = windows.find((x) => x.containerId === id);
    assert.ok(w);
    const layer = (l: string) => namedFeatures(feat(w.layers.find((x) => x.layerId === `layer:${l}`)));
    const job = layer("/bin/job");
    const sh = layer("/bin/sh");
    const tool = layer("/bin/tool");
    assert.equal(job["read_bytes.sum"], 3000, "sampled 500, then the rest at exit");
    assert.ok(Math.abs((job["cpu_seconds.sum"] ?? 0) - 0.05) < 1e-9, `job CPU ${job["cpu_seconds.sum"]}`);
    assert.equal(job["process_starts"], 1);
    assert.equal(tool["read_bytes.sum"], 200);
    assert.equal(tool["process_starts"], 1);
    assert.equal(sh["read_bytes.sum"], 100 + 700 + 50, "its subshells' own I/O and its own 50 bytes, none of the job's or the tool's");
    assert.equal(sh["process_starts"], 2);
    assert.equal(w.exitsCharged, 4);
    assert.deepEqual(tel.exitStats, { charged: 4, unattributed: 0, duplicates: 1 });
    // job 0.02 + 0.03, subshells 0.02 + 0.01, tool 0.03, shell 0.02: 0.13 s of the cgroup's 0.15 s.
    assert.equal(w.cpuAttributedShare?.available, true);
    assert.ok(Math.abs((w.cpuAttributedShare?.value ?? 0) - 0.13 / 0.150001) < 1e-9, `share ${w.cpuAttributedShare?.value}`);
    assert.deepEqual(lc.sizes.queued, 0);
  });

  it("a process whose io cannot be read makes its layer's I/O features NaN, not 0", () => {
    const h = fakeHost(join(tmp, "noio"), id);
    h.writeProc(1, { start: 10, ticks: 0, comm: "init", exe: "/bin/init" });
    h.writeProc(7, { start: 20, ticks: 0, comm: "secret", exe: "/bin/secret", noIo: true });
    h.setPids([1, 7]);
    h.setCpu(1);
    const { tel, windows } = fakeTelemetry(h, id);
    tel.tick(new Date(0));
    h.setCpu(2);
    tel.tick(new Date(1000));
    tel.flush(new Date(1000));
    const w = windows.find((x) => x.containerId === id);
    const secret = namedFeatures(feat(w?.layers.find((x) => x.layerId === "layer:/bin/secret")));
    const init = namedFeatures(feat(w?.layers.find((x) => x.layerId === "layer:/bin/init")));
    for (const m of ["read_bytes", "write_bytes", "disk_read_bytes", "disk_write_bytes"]) assert.ok(Number.isNaN(secret[`${m}.sum`]), m);
    assert.equal(secret["cpu_seconds.sum"], 0);
    assert.equal(init["read_bytes.sum"], 0);
  });
});
