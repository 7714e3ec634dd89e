/**
 * The labels the kubelet puts on a pod's containers (dockershim, cri-dockerd; CRI passes them to
 * containerd too). The agent reads a Docker container's pod from them; the aggregator falls back
 * to the namespace label for a graph that carries no pod.
 */
export const KUBE_LABELS = {
  pod: "io.kubernetes.pod.name",
  namespace: "io.kubernetes.pod.namespace",
  uid: "io.kubernetes.pod.uid",
  /** cri-dockerd marks a pod's sandbox ("podsandbox") and its containers ("container"). */
  dockerType: "io.kubernetes.docker.type",
} as const;
