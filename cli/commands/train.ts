import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions } from "../options.js";
import { DEFAULT_SINCE } from "../time-range.js";
import type { TrainFlags } from "../train-config.js";

export function registerTrain(program: Command): void {
  clientOptions(program.command("train").description("train anomaly models from baseline windows, write versioned artifacts and (--deploy) send them to the agents running each image"))
    .option("--image <ref...>", "an image to train for: a container's name, id or id prefix, or an image id sha256:…; repeatable")
    .option("--generic", "also train the node-level generic model (all layers), used while an image's own model warms up")
    .option("--from-file <file>", "windows exported by `shadowlayer windows --json` (lines or an array) instead of the aggregator's")
    .option("--since <time>", `windows that ended at or after this: a duration back from now or an ISO time (default: ${DEFAULT_SINCE})`)
    .option("--until <time>", "and before this (default: now)")
    .option("--out <dir>", "where artifacts are written as <scope>-<version>.json (default: <data-dir>/models)")
    .option("--deploy", "send each model through the aggregator (AdminService.DeployModel, admin certificate) and print each node's outcome")
    .option("--node <name>", "with --deploy: only this node")
    .option("--epochs <n>", "training epochs (default: the model's, 30; a flat loss stops sooner)")
    .option("--seed <n>", "seed for the shuffles and initial weights (a repeatable run)")
    .option("--json", "one JSON array of results")
    .action(action(train));
}

async function train(o: TrainFlags): Promise<void> {
  const { Code, ShadowError } = await runtime();
  const { resolveTrainPlan } = await import("../train-config.js");
  const plan = resolveTrainPlan(o, process.env);
  // Its own module: the model libraries load only for `train`, not for every client command.
  const { renderTrainResults, runTrain } = await import("../train-run.js");
  const results = await runTrain(o, plan);
  out(o.json ? JSON.stringify(results, null, 2) : renderTrainResults(results));
  const failed = results.filter((r) => !r.ok);
  if (failed.length > 0) throw new ShadowError(Code.FailedPrecondition, `${failed.length} of ${results.length} models not trained: ${failed.map((r) => `${r.target}: ${r.error ?? "?"}`).join("; ")}`);
}
