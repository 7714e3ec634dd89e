/**
 * Anomaly detection benchmark (issue 12; ANOMALY-BENCH.md says what runs and how to rerun it).
 *
 * 1. Real containers from a local image (test/harness/anomaly-images.ts): three busybox httpd
 *    under a varying request load from a bounded in-process client (slow sine plus random
 *    bursts) and three periodic-job containers (compress and checksum random data every few
 *    seconds). The agent's real telemetry records 2 s windows of 250 ms ticks, in this process.
 * 2. A baseline phase, then six separate injections (CPU burn, memory leak, outbound connection
 *    burst, fork storm, executed dropped binary, IO storm), each a bounded `docker exec` with quiet
 *    gaps between. Ground truth: the windows of the injected container's injected layer that
 *    overlap the injection.
 * 3. The autoencoder and two baselines (per-feature z-score, EWMA) fitted on the same baseline
 *    windows, thresholds by the same rule, scored on the same evaluation windows.
 * 4. In a worker thread: training on 10,000 windows and inference throughput, while this thread
 *    (telemetry and load still running) measures its event-loop delay.
 *
 * `--windows FILE` re-evaluates a recording saved by an earlier run (steps 3 and 4 only; the
 * event-loop delay is then measured with an idle main thread). Progress goes to stderr; the last
 * stdout line is one JSON object.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import type Docker from "dockerode";
import { withTimeout } from "../../common/timeout.js";
import { ensureAnbImage } from "../harness/anomaly-images.js";
import { startLoad, type LoadFigures, type RunningLoad } from "../harness/anomaly-load.js";
import { testEngine } from "../harness/engine.js";
import type { DetectorFigures } from "./anomaly-eval.js";
import { mean, type ContainerWindowRecord, type InjectionRecord, type LayerWindowRecord } from "./anomaly-metrics.js";
import { Recorder } from "./anomaly-record.js";
import type { WorkerJob, WorkerResult } from "./anomaly-worker.js";
import { INJECTIONS, removeOurContainers, runInjection, startServices, startSink, type Service } from "./anomaly-workloads.js";
import { round3 } from "./common.js";

const WINDOW_MS = 2000;
const SAMPLE_MS = 250;
const WEBS = 3;
/** Windows before this are the containers' start-up, not used. */
const WARMUP_S = 10;
/** `--quick`: a smoke run of the whole pipeline (too few windows for meaningful figures). */
const QUICK = process.argv.includes("--quick");
const BASELINE_S = QUICK ? 60 : 300;
const QUIET_S = QUICK ? 6 : 20;
const INJECT_S = QUICK ? 8 : 16;
const TAIL_S = QUICK ? 6 : 20;
/** The worker phase runs at most this long. */
const WORKER_TIMEOUT_MS = 240_000;
const OVERALL_TIMEOUT_MS = 25 * 60_000;
const LOAD = { baseRate: 45, amplitude: 0.6, periodS: 60, burstPerS: 0.03, burstFactor: 3, seed: 12, maxRequests: 200_000, maxInFlight: 64 };

function say(msg: string): void {
  process.stderr.write(`[bench:anomaly ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a run records, saved as JSON so it can be evaluated again (`--windows FILE`). */
export interface Recording {
  imageId: string;
  execSource: string;
  windowMs: number;
  sampleMs: number;
  baselineStart: number;
  baselineEnd: number;
  evalStart: number;
  evalEnd: number;
  layerWindows: LayerWindowRecord[];
  containerWindows: ContainerWindowRecord[];
  injections: InjectionRecord[];
  services: { name: string; kind: string }[];
  load: LoadFigures | null;
  sinkAccepted: number;
  /** The machine's 1-minute load average at the start and end of the recording (it may be shared). */
  load1: { start: number; end: number };
}

/** Waits for the next window boundary (at most two windows), then 50 ms more. */
async function nextBoundary(rec: Recorder): Promise<void> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      off();
      resolve();
    }, 2 * WINDOW_MS);
    const off = rec.onBoundary(() => {
      clearTimeout(t);
      off();
      resolve();
    });
  });
  await sleep(50);
}

async function record(docker: Docker, dockerRoot: string, services: Service[], image: string): Promise<{ rec: Recording; recorder: Recorder; load: RunningLoad }> {
  const sink = await startSink(2000, 500);
  const webs = services.filter((s) => s.kind === "web");
  const totalS = WARMUP_S + BASELINE_S + INJECTIONS.length * (QUIET_S + INJECT_S + 2) + TAIL_S + WORKER_TIMEOUT_MS / 1000 + 30;
  const load = startLoad({ ports: webs.map((s) => s.port!), ...LOAD }, totalS);
  const load1Start = loadavg()[0]!;
  const recorder = await Recorder.start({ docker, dockerRoot, windowMs: WINDOW_MS, sampleMs: SAMPLE_MS }, new Map(services.map((s) => [s.id, s.name])));
  say(`recording: ${services.length} containers, ${WINDOW_MS / 1000} s windows of ${SAMPLE_MS} ms ticks, exec source ${recorder.execSource}; warm-up ${WARMUP_S} s`);
  await sleep(WARMUP_S * 1000);
  const baselineStart = Date.now();
  for (let s = 0; s < BASELINE_S; s += 30) {
    await sleep(Math.min(30, BASELINE_S - s) * 1000);
    say(`baseline ${Math.min(BASELINE_S, s + 30)}/${BASELINE_S} s: ${recorder.layerWindows.length} layer-windows, ${load.figures.sent} requests (${load.figures.failed} failed, ${load.figures.bursts} bursts); load ${loadavg()[0]!.toFixed(2)}`);
  }
  const baselineEnd = Date.now();
  const injections: InjectionRecord[] = [];
  let webTurn = 0;
  let jobTurn = 0;
  for (const inj of INJECTIONS) {
    await sleep(QUIET_S * 1000);
    // The injected services take turns, so no container gets two injections in a row.
    const pool = services.filter((s) => s.kind === inj.target);
    const svc = pool[(inj.target === "web" ? webTurn++ : jobTurn++) % pool.length]!;
    if (inj.prepare !== undefined) await inj.prepare(svc.container);
    const declared = recorder.layerOfPath(svc.id, inj.exe);
    if (declared === undefined) throw new Error(`no layer for ${inj.exe} in ${svc.name}`);
    await nextBoundary(recorder);
    const observed = new Set<string>();
    const run = await runInjection(svc.container, inj, INJECT_S, sink.port, (pid) => {
      for (const l of recorder.layersOfTree(svc.id, pid)) observed.add(l);
    });
    if (!observed.has(declared)) say(`WARNING: ${inj.name}'s processes were never seen in its declared layer ${declared}`);
    injections.push({ name: inj.name, container: svc.name, layers: [declared], declaredLayer: declared, observedLayers: [...observed], t0: run.t0, t1: run.t1, exitCode: run.exitCode });
    say(`injection ${inj.name} in ${svc.name}: ${((run.t1 - run.t0) / 1000).toFixed(1)} s, ${run.processes} processes, exit ${run.exitCode}, declared layer ${declared}, observed ${[...observed].join(",") || "(none)"}`);
  }
  await sleep(TAIL_S * 1000);
  const evalEnd = Date.now();
  const rec: Recording = {
    imageId: image,
    execSource: recorder.execSource,
    windowMs: WINDOW_MS,
    sampleMs: SAMPLE_MS,
    baselineStart,
    baselineEnd,
    evalStart: baselineEnd,
    evalEnd,
    layerWindows: recorder.layerWindows,
    containerWindows: recorder.containerWindows,
    injections,
    services: services.map((s) => ({ name: s.name, kind: s.kind })),
    load: load.figures,
    sinkAccepted: sink.accepted(),
    load1: { start: round3(load1Start), end: round3(loadavg()[0]!) },
  };
  await sink.close();
  return { rec, recorder, load };
}

/** This thread's event-loop delay p99 (ms) over `ms` with no worker: the reference for the worker phase's. */
async function loopDelayAlone(ms: number): Promise<number> {
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  await sleep(ms);
  h.disable();
  return h.percentile(99) / 1e6;
}

/** Runs the worker job while this thread's event-loop delay is measured. */
async function workerPhase(baseline: readonly LayerWindowRecord[]): Promise<{ result: WorkerResult; p99Ms: number; maxMs: number }> {
  const job: WorkerJob = {
    vectors: baseline.map((w) => w.vector),
    seconds: baseline.map((w) => w.seconds),
    trainWindows: 10_000,
    jitter: 0.05,
    batch: 1000,
    inferMs: 5000,
    maxBatches: 200,
    seed: 12,
  };
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const worker = new Worker(new URL("./anomaly-worker.js", import.meta.url), { workerData: job });
  try {
    const msg = await withTimeout(
      new Promise<{ ok: boolean; result?: WorkerResult; error?: string }>((resolve, reject) => {
        worker.once("message", resolve);
        worker.once("error", reject);
        worker.once("exit", (code) => reject(new Error(`the worker exited (${code}) before answering`)));
      }),
      WORKER_TIMEOUT_MS,
      "the training/inference worker",
    );
    h.disable();
    if (!msg.ok || msg.result === undefined) throw new Error(`worker failed: ${msg.error ?? "no result"}`);
    return { result: msg.result, p99Ms: h.percentile(99) / 1e6, maxMs: h.max / 1e6 };
  } finally {
    h.disable();
    await worker.terminate();
  }
}

function shares(rec: Recording): { computed: number; reported: number | null; byKind: Record<string, number> } {
  const inBaseline = rec.containerWindows.filter((w) => w.start >= rec.baselineStart && w.end <= rec.baselineEnd && w.cgroupCpuS !== null && w.cgroupCpuS > 0);
  const kind = new Map(rec.services.map((s) => [s.name, s.kind]));
  const byKind: Record<string, number> = {};
  for (const k of ["web", "job"]) byKind[k] = round3(mean(inBaseline.filter((w) => kind.get(w.container) === k).map((w) => w.layerCpuS / w.cgroupCpuS!)));
  const reported = inBaseline.map((w) => w.reportedShare).filter((s): s is number => s !== null);
  return { computed: mean(inBaseline.map((w) => w.layerCpuS / w.cgroupCpuS!)), reported: reported.length > 0 ? mean(reported) : null, byKind };
}

function brief(f: DetectorFigures): Record<string, number> {
  return { precision: round3(f.precision), recall: round3(f.recall), f1: round3(f.f1), fp_per_1000: round3(f.fp_per_1000), latency_windows: round3(f.latency_windows), recall_half_covered: round3(f.recall_half_covered), tp: f.tp, fp: f.fp, fn: f.fn };
}

/** `afterWorker` runs once the worker phase is over (the full run stops its load and telemetry there). */
async function report(rec: Recording, mainLoopNote: string, afterWorker: () => Promise<void> = async () => {}): Promise<void> {
  const baseline = rec.layerWindows.filter((w) => w.start >= rec.baselineStart && w.end <= rec.baselineEnd);
  const evaluation = rec.layerWindows.filter((w) => w.start >= rec.evalStart && w.end <= rec.evalEnd);
  say(`${baseline.length} baseline layer-windows, ${evaluation.length} evaluation layer-windows; worker phase (${mainLoopNote}) ...`);
  const alone = await loopDelayAlone(10_000);
  const w = await workerPhase(baseline);
  await afterWorker();
  say(`worker: backend ${w.result.backend}; trained on ${w.result.trainWindows} windows in ${w.result.trainS.toFixed(2)} s (${w.result.epochs} epochs); ${w.result.inferWindows} windows scored in ${w.result.inferS.toFixed(2)} s; main event loop p99 ${w.p99Ms.toFixed(2)} ms (max ${w.maxMs.toFixed(1)}; ${alone.toFixed(2)} ms over 10 s before the worker)`);
  // Loaded here, not at the top: a run records (and saves) its windows before any model code loads.
  const { evaluate } = await import("./anomaly-eval.js");
  const ev = await evaluate(baseline, evaluation, rec.injections, rec.imageId, say);
  for (const [k, f] of [["ae", ev.ae], ["ae (own calibration)", ev.aeOwnCalibration], ["zscore", ev.zscore], ["ewma", ev.ewma]] as const) {
    say(`${k}: P ${f.precision.toFixed(3)} R ${f.recall.toFixed(3)} F1 ${f.f1.toFixed(3)} FP/1000 ${f.fp_per_1000.toFixed(2)} latency ${f.latency_windows.toFixed(2)}; per injection ${JSON.stringify(f.per_injection)}`);
  }
  say(`autoencoder's first reasons on true positives: ${JSON.stringify(ev.topReasons)}`);
  const share = shares(rec);
  const out = {
    backend: w.result.backend,
    ae: brief(ev.ae),
    zscore: brief(ev.zscore),
    ewma: brief(ev.ewma),
    infer_windows_per_s: round3(w.result.inferWindows / Math.max(1e-6, w.result.inferS)),
    train_s_10k: round3(w.result.trainS),
    event_loop_p99_ms: round3(w.p99Ms),
    event_loop_p99_ms_no_worker: round3(alone),
    cpu_attributed_share: round3(share.reported ?? share.computed),
    cpu_attributed_share_source: share.reported !== null ? "telemetry" : "computed",
    cpu_attributed_share_computed: round3(share.computed),
    cpu_attributed_share_by_kind: share.byKind,
    ae_own_calibration: brief(ev.aeOwnCalibration),
    per_injection_recall: Object.fromEntries(Object.entries(ev.ae.per_injection).map(([k, v]) => [k, { windows: v.windows, ae: round3(v.recall), zscore: round3(ev.zscore.per_injection[k]?.recall ?? 0), ewma: round3(ev.ewma.per_injection[k]?.recall ?? 0), ae_first: v.first_detected }])),
    windows: ev.counts,
    main_thread_infer_windows_per_s: round3(ev.mainInferWindowsPerS),
    train_s_baseline: round3(ev.trainS),
    exec_source: rec.execSource,
    injections_layers: Object.fromEntries(rec.injections.map((i) => [i.name, { container: i.container, declared: i.declaredLayer, observed: i.observedLayers }])),
    requests: rec.load,
    load1: rec.load1,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function main(): Promise<number> {
  const started = Date.now();
  const i = process.argv.indexOf("--windows");
  if (i > 0) {
    const file = process.argv[i + 1];
    if (file === undefined) throw new Error("--windows needs a file");
    await report(JSON.parse(readFileSync(file, "utf8")) as Recording, "re-evaluation: idle main thread");
    say(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return 0;
  }
  const eng = await withTimeout(testEngine(), 10 * 60_000, "testEngine()");
  let recorder: Recorder | undefined;
  let load: RunningLoad | undefined;
  try {
    const stale = await removeOurContainers(eng.docker);
    if (stale > 0) say(`removed ${stale} containers left by an earlier run`);
    const image = await ensureAnbImage(eng.docker, eng.base);
    const imageId = ((await eng.docker.getImage(image).inspect()) as { Id: string }).Id;
    const lifetimeS = Math.ceil(OVERALL_TIMEOUT_MS / 1000);
    const services = await startServices(eng.docker, image, WEBS, lifetimeS);
    say(`services up: ${services.map((s) => s.name + (s.port !== undefined ? `:${s.port}` : "")).join(", ")}`);
    const r = await record(eng.docker, eng.info.rootDir, services, imageId);
    recorder = r.recorder;
    load = r.load;
    const file = process.env["ANOMALY_BENCH_SAVE"] ?? join(tmpdir(), `sl-anb-recording-${Date.now()}.json`);
    writeFileSync(file, JSON.stringify(r.rec));
    say(`recording saved to ${file} (rerun the evaluation with --windows ${file})`);
    // Telemetry and load keep running through the worker phase: the main loop is the agent's.
    await report(r.rec, "telemetry and load running on the main thread", async () => {
      await load?.stop();
      await recorder?.stop();
      load = undefined;
      recorder = undefined;
      await removeOurContainers(eng.docker);
    });
    say(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return 0;
  } finally {
    await load?.stop().catch(() => undefined);
    await recorder?.stop().catch(() => undefined);
    say("removing the containers ...");
    await withTimeout(removeOurContainers(eng.docker), 120_000, "cleanup").catch((err: unknown) => say(`cleanup failed: ${String(err)}`));
  }
}

/** For an interrupted or overrun run: remove the containers, then exit. */
function abandon(why: string, code: number): void {
  say(`${why}: removing the containers ...`);
  void (async () => {
    const eng = await testEngine();
    await withTimeout(removeOurContainers(eng.docker), 120_000, "cleanup").catch((err: unknown) => say(`cleanup failed: ${String(err)}`));
    process.exit(code);
  })();
}
process.once("SIGINT", () => abandon("SIGINT", 130));
process.once("SIGTERM", () => abandon("SIGTERM", 143));
const watchdog = setTimeout(() => abandon(`FAILED: the whole benchmark exceeded ${OVERALL_TIMEOUT_MS} ms`, 2), OVERALL_TIMEOUT_MS);
watchdog.unref();
try {
  process.exitCode = await main();
} catch (err) {
  say(`FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
}
clearTimeout(watchdog);
process.exit(process.exitCode);
