/**
 * The flags of `shadowlayer train`, checked in one place: what to train (images, the generic
 * model), from where (a file, or a time range at the aggregator), where the artifacts go and
 * whether they are deployed. Pure, so that the CronJob's command is checked by the same code.
 */
import { join } from "node:path";
import { Code, ShadowError } from "../common/errors.js";
import type { Env } from "../common/config.js";
import { resolveClientConfig } from "./config.js";
import type { ClientFlags } from "./options.js";
import { DEFAULT_SINCE, parseTimeFlag } from "./time-range.js";
import type { TrainPlan } from "./train-run.js";

export type TrainFlags = ClientFlags & {
  image?: string[];
  generic?: boolean;
  fromFile?: string;
  since?: string;
  until?: string;
  out?: string;
  deploy?: boolean;
  node?: string;
  epochs?: string;
  seed?: string;
  json?: boolean;
};

const REF = /^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,254}$/;

function wholeIn(text: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new ShadowError(Code.InvalidArgument, `${flag}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(text.slice(0, 40))}`);
  return n;
}

export function resolveTrainPlan(flags: TrainFlags, env: Env, now = new Date()): TrainPlan {
  const images = flags.image ?? [];
  if (images.length === 0 && flags.generic !== true) throw new ShadowError(Code.InvalidArgument, "what to train: --image <container name, id or image id> (repeatable) or --generic");
  for (const i of images) if (!REF.test(i)) throw new ShadowError(Code.InvalidArgument, `--image: ${JSON.stringify(i.slice(0, 80))} is not a container name, id or image id`);
  if (flags.fromFile !== undefined && (flags.since !== undefined || flags.until !== undefined)) throw new ShadowError(Code.InvalidArgument, "--from-file and --since/--until: give one source of windows");
  if (flags.node !== undefined && flags.deploy !== true) throw new ShadowError(Code.InvalidArgument, "--node says where --deploy sends the model: give --deploy too");
  const since = parseTimeFlag(flags.since ?? DEFAULT_SINCE, "--since", now);
  const until = flags.until === undefined ? now : parseTimeFlag(flags.until, "--until", now);
  if (until <= since) throw new ShadowError(Code.InvalidArgument, `--until (${until.toISOString()}) must be after --since (${since.toISOString()})`);
  const client = resolveClientConfig(flags, env);
  return {
    images: [...new Set(images)],
    generic: flags.generic === true,
    fromFile: flags.fromFile,
    since,
    until,
    out: flags.out ?? join(client.dataDir, "models"),
    deploy: flags.deploy === true,
    node: flags.node,
    epochs: wholeIn(flags.epochs, "--epochs", 1, 1000),
    seed: wholeIn(flags.seed, "--seed", 0, 2 ** 31 - 1),
  };
}
