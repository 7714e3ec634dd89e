/**
 * The container a switchover or rollback names: its full id, a unique id prefix of at least 12
 * hex digits (Falco's `container.id` is the first 12; a shorter prefix could pick the wrong
 * container for an action that stops one), or its name.
 */
import type { LayerGraph } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { Code, ShadowError } from "../../common/errors.js";

export const MIN_ID_PREFIX = 12;
const REF = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/;

/** Whether `ref` names the container `id`/`name` (id, prefix of MIN_ID_PREFIX+ hex digits, or name). */
export function namesContainer(ref: string, id: string, name: string): boolean {
  if (id === "" && name === "") return false;
  return ref === id || (name !== "" && ref === name) || (isIdPrefix(ref) && id.startsWith(ref));
}

function isIdPrefix(ref: string): boolean {
  return ref.length >= MIN_ID_PREFIX && /^[0-9a-f]{12,64}$/.test(ref);
}

/** Checks a reference's shape: InvalidArgument for an empty or malformed one. */
export function checkRef(ref: string): string {
  if (ref === "") throw new ShadowError(Code.InvalidArgument, "container is required (an id, a prefix of 12+ hex digits, or a name)");
  if (!REF.test(ref)) throw new ShadowError(Code.InvalidArgument, `${JSON.stringify(ref.slice(0, 80))} is not a container id or name`);
  return ref;
}

/** The one known container `ref` names: NotFound when none, InvalidArgument when several. */
export function resolveContainer(graphs: { all(): LayerGraph[]; get(id: string): LayerGraph | undefined }, ref: string): LayerGraph {
  checkRef(ref);
  const exact = graphs.get(ref);
  if (exact !== undefined) return exact;
  const all = graphs.all();
  const byName = all.filter((g) => g.containerName === ref);
  if (byName.length === 1) return byName[0] as LayerGraph;
  if (byName.length > 1) throw new ShadowError(Code.InvalidArgument, `name ${ref} matches containers on ${byName.length} nodes; use the id`);
  if (/^[0-9a-f]+$/.test(ref) && ref.length < MIN_ID_PREFIX) throw new ShadowError(Code.InvalidArgument, `id prefix ${ref} is too short: give at least ${MIN_ID_PREFIX} hex digits`);
  if (isIdPrefix(ref)) {
    const hits = all.filter((g) => g.containerId.startsWith(ref));
    if (hits.length === 1) return hits[0] as LayerGraph;
    if (hits.length > 1) throw new ShadowError(Code.InvalidArgument, `id prefix ${ref} matches ${hits.length} containers; give more digits`);
  }
  throw new ShadowError(Code.NotFound, `no container ${ref} is known`);
}
