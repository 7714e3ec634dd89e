import type { Command } from "commander";
import type { AgentFlags } from "../../agent/index.js";
import { runUntilSignal } from "../action.js";
import { agentOptions, dataDirOption } from "../options.js";

export function registerAgent(program: Command): void {
  agentOptions(dataDirOption(program.command("agent").description("run a node agent alone (the Kubernetes DaemonSet)")))
    .option("--aggregator <host:port>", "aggregator address (env SHADOWLAYER_AGGREGATOR)")
    .option("--runtime <runtime>", "the container runtime to read: docker, containerd (a Kubernetes node's, through CRI), or auto: containerd when its socket answers with CRI, else Docker (env SHADOWLAYER_RUNTIME; default: auto)")
    .option("--docker-root <dir>", "the engine's data root as mounted here (default: what the engine reports)")
    .option("--containerd-socket <path>", "containerd's socket (env CONTAINERD_ADDRESS; default: /run/containerd/containerd.sock; k3s and RKE2: /run/k3s/containerd/containerd.sock)")
    .option("--containerd-namespace <ns>", "containerd namespace of the pods (env CONTAINERD_NAMESPACE; default: k8s.io, the kubelet's)")
    .option("--containerd-snapshots <dir>", "the overlayfs snapshotter's directory as mounted here, the one holding snapshots/ (default: <containerd root>/io.containerd.snapshotter.v1.overlayfs as containerd reports it)")
    .option("--proc-root <dir>", "the host's /proc as mounted here (default: /proc)")
    .option("--cgroup-root <dir>", "the host's cgroup filesystem as mounted here (default: /sys/fs/cgroup)")
    .option("--http <host:port>", "/metrics, /healthz, /readyz (default: 127.0.0.1:9465)")
    .option("--tls-dir <dir>", "ca.crt, agent-<node>.crt, agent-<node>.key (default: <data-dir>/tls)")
    .option("--insecure", "no TLS (loud warning; tests only)")
    .option("--switch-observe <duration>", "how long a switched-to shadow is watched; exiting or unhealthy in it rolls back (ms, or 30s, 2m; default: 30s)")
    .option("--switch-health-timeout <duration>", "how long a started shadow may take to pass its health gate before the switchover rolls back (default: 10s)")
    .option("--switch-drain-timeout <duration>", "how long connections in flight to the replaced container may take to end before they are cut (default: 10s)")
    .action(runUntilSignal(async (o: AgentFlags) => (await import("../run-agent.js")).runAgent(o)));
}
