/**
 * The anomaly benchmark's evaluation: the autoencoder (trainModel) and the two baselines
 * (ZScoreDetector, EwmaDetector) fitted on the same baseline windows, their thresholds set by the
 * same rule (fitCalibration on the same held-out baseline windows; alarm at a calibrated score
 * ≥ 50, i.e. above the held-out windows' 99.5th percentile of each detector's statistic), then the
 * same evaluation windows scored by all three. Nothing here looks at the evaluation labels before
 * the alarms are fixed.
 */
import { initBackend } from "../../models/backend.js";
import { EwmaDetector, ZScoreDetector } from "../../models/baselines.js";
import { calibratedScore, fitCalibration } from "../../models/calibration.js";
import { trainModel } from "../../models/train.js";
import type { ModelInput } from "../../models/types.js";
import { coverage, detection, EXCLUDED, latencies, labelWindows, mean, splitBaseline, streamKey, type Detection, type InjectionLatency, type InjectionRecord, type LayerWindowRecord } from "./anomaly-metrics.js";

/** Every HELD_OUT_EVERY-th baseline window (in time order) is held out for calibration. */
export const HELD_OUT_EVERY = 5;
/** The alarm rule shared by the three detectors. */
export const ALARM_AT = 50;

export interface DetectorFigures extends Detection {
  latency_windows: number;
  /** Recall on the positive windows the injection covered at least half of (the rule counts any overlap). */
  recall_half_covered: number;
  per_injection: Record<string, { windows: number; recall: number; first_detected: number | null }>;
}

export interface Evaluation {
  backend: string;
  backendReason: string;
  ae: DetectorFigures;
  /** The autoencoder with the calibration trainModel fitted on its own hold-out (ScoredWindow.score ≥ 50). */
  aeOwnCalibration: DetectorFigures;
  zscore: DetectorFigures;
  ewma: DetectorFigures;
  counts: { baseline: number; fit: number; heldOut: number; evaluation: number; positive: number; normal: number; excluded: number };
  /** Main-thread throughput of AnomalyModel.score over the evaluation windows (one batch). */
  mainInferWindowsPerS: number;
  trainS: number;
  epochs: number;
  /** The features most often named first in the autoencoder's reasons on its true positives. */
  topReasons: Record<string, number>;
}

function toInput(w: LayerWindowRecord): ModelInput {
  return { vector: w.vector, seconds: w.seconds };
}

function byTime(a: LayerWindowRecord, b: LayerWindowRecord): number {
  return a.end - b.end || a.start - b.start || streamKey(a).localeCompare(streamKey(b));
}

function figures(evalW: readonly LayerWindowRecord[], label: readonly number[], alarm: readonly boolean[], injections: readonly InjectionRecord[]): DetectorFigures {
  const d = detection(
    label.map((l) => l >= 0),
    alarm,
  );
  const lat: InjectionLatency[] = latencies(evalW, label, alarm, injections);
  const per: DetectorFigures["per_injection"] = {};
  for (const l of lat) per[l.name] = { windows: l.windows, recall: l.recall, first_detected: l.firstDetected };
  const half = evalW.map((w, i) => i).filter((i) => label[i]! >= 0 && coverage(evalW[i]!, injections[label[i]!]!) >= 0.5);
  const recallHalf = half.length === 0 ? 0 : half.filter((i) => alarm[i]).length / half.length;
  return { ...d, latency_windows: mean(lat.map((l) => l.latency)), recall_half_covered: recallHalf, per_injection: per };
}

export async function evaluate(
  baselineWindows: readonly LayerWindowRecord[],
  evaluationWindows: readonly LayerWindowRecord[],
  injections: readonly InjectionRecord[],
  imageId: string,
  log: (m: string) => void,
): Promise<Evaluation> {
  const backend = await initBackend("auto");
  log(`tfjs backend: ${backend.name} (${backend.reason})`);
  const baseline = [...baselineWindows].sort(byTime);
  const all = [...evaluationWindows].sort(byTime);
  const allLabels = labelWindows(all, injections);
  const evalW = all.filter((_, i) => allLabels[i] !== EXCLUDED);
  const label = allLabels.filter((l) => l !== EXCLUDED);
  const { fit, heldOut, heldOutIdx } = splitBaseline(baseline, HELD_OUT_EVERY);
  const fitIn = fit.map(toInput);
  const heldIn = heldOut.map(toInput);
  const evalIn = evalW.map(toInput);

  // Autoencoder.
  const t0 = performance.now();
  const model = await trainModel(fitIn, { scope: { kind: "image", imageId }, seed: 12 });
  const trainS = (performance.now() - t0) / 1000;
  log(`autoencoder trained on ${fitIn.length} windows in ${trainS.toFixed(2)} s (${model.manifest.epochs} epochs, final loss ${model.manifest.finalLoss.toFixed(4)})`);
  const aeCal = fitCalibration(model.score(heldIn).map((s) => s.error));
  const t1 = performance.now();
  const scored = model.score(evalIn);
  const mainInferWindowsPerS = evalIn.length / Math.max(1e-6, (performance.now() - t1) / 1000);
  const aeAlarm = scored.map((s) => calibratedScore(aeCal, s.error) >= ALARM_AT);
  const aeOwnAlarm = scored.map((s) => s.score >= ALARM_AT);
  const topReasons: Record<string, number> = {};
  scored.forEach((s, i) => {
    const first = s.reasons[0]?.feature;
    if (aeAlarm[i] && label[i]! >= 0 && first !== undefined) topReasons[first] = (topReasons[first] ?? 0) + 1;
  });
  const epochs = model.manifest.epochs;
  model.dispose();

  // Per-feature 3-sigma z-score.
  const z = ZScoreDetector.fit(fitIn);
  const zCal = fitCalibration(z.statistic(heldIn));
  const zAlarm = z.statistic(evalIn).map((s) => calibratedScore(zCal, s) >= ALARM_AT);

  // EWMA: one stream per (container, layer), run over the baseline then the evaluation, in time order.
  const ew = EwmaDetector.fit(fitIn);
  const seq = [...baseline, ...all];
  const stat = ew.statistic(seq.map(toInput), seq.map(streamKey));
  const eCal = fitCalibration(heldOutIdx.map((i) => stat[i]!));
  const eAlarm = all.map((_, j) => calibratedScore(eCal, stat[baseline.length + j]!) >= ALARM_AT).filter((_, j) => allLabels[j] !== EXCLUDED);

  const positive = label.filter((l) => l >= 0).length;
  return {
    backend: backend.name,
    backendReason: backend.reason,
    ae: figures(evalW, label, aeAlarm, injections),
    aeOwnCalibration: figures(evalW, label, aeOwnAlarm, injections),
    zscore: figures(evalW, label, zAlarm, injections),
    ewma: figures(evalW, label, eAlarm, injections),
    counts: { baseline: baseline.length, fit: fit.length, heldOut: heldOut.length, evaluation: evalW.length, positive, normal: evalW.length - positive, excluded: all.length - evalW.length },
    mainInferWindowsPerS,
    trainS,
    epochs,
    topReasons,
  };
}
