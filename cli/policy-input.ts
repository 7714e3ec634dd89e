/**
 * A --policies file, checked by the aggregator's policy schema. Imported only by the commands that
 * run or configure the aggregator: importing it loads the aggregator.
 */
import { readFileSync } from "node:fs";
import { parsePolicies } from "../aggregator/index.js";
import type { Policy } from "../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Code, ShadowError } from "../common/errors.js";

export function readPolicyFile(file: string): Policy[] {
  const source = `--policies ${file}`;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `${source}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return parsePolicies(raw, source);
}
