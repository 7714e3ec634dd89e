/**
 * Which policy decides for a container: the first, in order, whose labels and namespace all match
 * the container's labels; the built-in default (which an operator may change, not delete) last.
 */
import { create } from "@bufbuild/protobuf";
import { PolicySchema, type Policy } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { KUBE_LABELS } from "../../common/kube-labels.js";

/** The built-in policy: it does not switch on drift alone (a policy per environment may). */
export const DEFAULT_POLICY = { name: "default", rebuildThreshold: 60, switchThreshold: 85, order: 1_000_000, switchOnDrift: false } as const;
/** The label Kubernetes puts on a pod's containers naming its namespace. */
export const NAMESPACE_LABEL = KUBE_LABELS.namespace;

/** The pod a container belongs to, as its graph says (the agent read it through CRI). */
export interface PodSubject {
  namespace: string;
  labels: Record<string, string>;
}

/** The pod fields of a graph, for `selectPolicy`. */
export function podOf(g: { namespace: string; podLabels: Record<string, string> }): PodSubject {
  return { namespace: g.namespace, labels: g.podLabels };
}

/**
 * A policy's namespace is the pod's (from CRI; a graph from an agent that predates pods falls
 * back to the kubelet's label on the container); each of its labels matches the container's
 * label or its pod's.
 */
function policyMatches(p: Policy, labels: Record<string, string>, pod: PodSubject | undefined): boolean {
  const namespace = pod !== undefined && pod.namespace !== "" ? pod.namespace : labels[NAMESPACE_LABEL];
  if (p.namespace !== "" && namespace !== p.namespace) return false;
  for (const [k, v] of Object.entries(p.labels)) if (labels[k] !== v && pod?.labels[k] !== v) return false;
  return true;
}

/** The policies in the order they are tried (by order, then name), the default one last. */
export function orderPolicies(stored: Iterable<Policy>): Policy[] {
  const all = [...stored];
  const defaultPolicy = all.find((p) => p.name === DEFAULT_POLICY.name) ?? create(PolicySchema, { ...DEFAULT_POLICY });
  const rest = all.filter((p) => p.name !== DEFAULT_POLICY.name);
  return [...rest.sort((a, b) => a.order - b.order || a.name.localeCompare(b.name)), defaultPolicy];
}

/** The policy for a container's labels (and pod) among `ordered` (as `orderPolicies` returns them). */
export function selectPolicy(ordered: readonly Policy[], labels: Record<string, string>, pod?: PodSubject): Policy {
  return ordered.find((p) => p.name !== DEFAULT_POLICY.name && policyMatches(p, labels, pod)) ?? (ordered[ordered.length - 1] as Policy);
}
