import { createHash } from "node:crypto";

/**
 * OCI chain ids: chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)).
 * The engine's layerdb is keyed by them.
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  let prev = "";
  for (const d of diffIds) {
    prev = prev === "" ? d : `sha256:${createHash("sha256").update(`${prev} ${d}`).digest("hex")}`;
    out.push(prev);
  }
  return out;
}
