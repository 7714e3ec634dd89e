/**
 * The options more than one command takes, declared once. Commander only collects text here:
 * defaults and the environment are applied, and values checked, by each program's configuration.
 */
import { Option, type Command } from "commander";

/** How a client command reaches the aggregator. */
export interface ClientFlags {
  dataDir?: string;
  aggregator?: string;
  tlsDir?: string;
  insecure?: boolean;
}

export type JsonFlags = ClientFlags & { json?: boolean };

/** What filterOptions adds. */
export type FilterFlags = JsonFlags & { container?: string; node?: string };

export function dataDirOption(cmd: Command): Command {
  return cmd.addOption(new Option("--data-dir <dir>", "where state, certificates and the endpoint file live (env SHADOWLAYER_DATA_DIR; default: ~/.shadowlayer)"));
}

export function threatOptions(cmd: Command): Command {
  return cmd
    .option("--feed <KIND=SOURCE...>", "vulnerability feed: osv|kev|epss|nvd = a path (OSV: a directory, a record, or all.zip) or an https URL; repeatable")
    .option("--policies <file>", "JSON array of policies: {name, labels, namespace, rebuild_threshold, switch_threshold, order}");
}

export function clientOptions(cmd: Command): Command {
  return dataDirOption(cmd)
    .option("--aggregator <host:port>", "aggregator address (default: the one `up` wrote in the data dir)")
    .option("--tls-dir <dir>", "certificates (default: <data-dir>/tls)")
    .option("--insecure", "connect without TLS (only to an aggregator started with --insecure)");
}

/** The rebuild stage: builders, registry, strategies' inputs; shared by `up` and `aggregator`. */
export function rebuildOptions(cmd: Command): Command {
  return cmd
    .option("--rebuilds <on|off>", "plan and build shadows when a layer passes its policy's rebuild threshold (default: on)")
    .option(
      "--builder <spec...>",
      "a builder engine: unix:///path or tcp://host:port[,name=N][,concurrency=N][,cpuset=CPUS][,cpus=X][,shares=N][,memory=SIZE][,tls=DIR]; repeatable (default: the local engine, concurrency 1, pinned to the last CPU)",
    )
    .option("--registry <host:port/repo>", "push shadows by digest to this OCI registry over TLS (env SHADOWLAYER_REGISTRY; default: keep them in the local engine)")
    .option("--recipe-root <dir...>", "directories recipe build contexts may live in (an image's shadowlayer.recipe.context label must point inside one); repeatable")
    .option("--package-mirror <url>", "apt/apk mirror the patch strategy upgrades packages from (env SHADOWLAYER_PACKAGE_MIRROR)")
    .option("--base-map <OLD=NEW...>", "rebase mapping: images on base OLD are rebased onto NEW; repeatable")
    .option("--shadows-keep <n>", "shadows kept per source image; older ones are deleted (default: 3)")
    .option("--signing-key <file>", "the key shadows are signed with (default: cosign.key in the TLS directory)");
}

/** The registry's CA and credentials, for the aggregator alone (`up` and `agent` have them from agentOptions). */
export function registryAccessOptions(cmd: Command): Command {
  return cmd
    .option("--registry-ca <file>", "CA certificate (PEM) the registry's TLS certificate is checked against (env SHADOWLAYER_REGISTRY_CA)")
    .option("--registry-auth <file>", "a file holding username:password for the registry (env SHADOWLAYER_REGISTRY_AUTH)");
}

/** How much one node may store at the aggregator, shared by `up` and `aggregator`. */
export function nodeCapOptions(cmd: Command): Command {
  return cmd
    .option("--max-containers-per-node <n>", "containers one node may have stored; past it the node's new containers are refused and counted (env SHADOWLAYER_MAX_CONTAINERS_PER_NODE; default: 5000)")
    .option("--max-graph-mb-per-node <MiB>", "MiB of layer graphs one node may have stored, likewise (env SHADOWLAYER_MAX_GRAPH_MB_PER_NODE; default: 64)");
}

/** The agent's node, engine and telemetry, shared by `up` and `agent`. */
export function agentOptions(cmd: Command): Command {
  return cmd
    .option("--node <name>", "this node's name (env SHADOWLAYER_NODE; default: the hostname)")
    .option("--docker-socket <path>", "Docker engine socket (env DOCKER_HOST; default: /var/run/docker.sock)")
    .option("--refresh-ms <ms>", "how often processes are re-read (default: 2000)")
    .option("--sample-ms <ms>", "telemetry sampling tick (default: 1000)")
    .option("--window <seconds>", "telemetry window length, the model's unit of input (default: 10)")
    .option("--exec-source <source>", "exec events: auto (eBPF when available, else /proc polling), or force ebpf or proc (default: auto)")
    .option("--bpftrace <path>", "bpftrace binary (default: bpftrace on PATH)")
    .option("--spool-max <items>", "telemetry items kept while the aggregator is unreachable, oldest dropped first (default: 100000)")
    .option("--anomaly <on|off>", "score every layer-window with the image's anomaly model (0-100, reasons, alerting) before it is sent (default: on)")
    .option(
      "--anomaly-warmup <duration>",
      "how long a new image's windows are collected before its own model is trained; until then the node's generic model scores it, flagged generic (ms, or 90s, 30m, 1h; default: 30m)",
    )
    .option("--anomaly-min-windows <n>", "fewest baseline layer-windows a model is trained on; also the fewest a deployed model must have been trained on (default: 200)")
    .option("--anomaly-workers <n>", "worker threads that train and score, off the agent's event loop (default: 1, at most 16)")
    .option("--anomaly-backend <backend>", "tfjs backend: auto (tfjs-node if installed, else wasm, else cpu), or force wasm, cpu or node (default: auto)")
    .option("--inventory-budget-ms <ms>", "time one image's package inventory may take; past it the inventory is sent partial (default: 60000)")
    .option("--inventory-budget-entries <n>", "directory entries one image's inventory may read, all layers together (default: 1000000)")
    .option("--inventory-budget-mb <mb>", "package database bytes one image's inventory may read, in MiB (default: 256)")
    .option("--signing-key-pub <file>", "the aggregator's image-signing public key; shadows are verified with it before use (default: <tls-dir>/cosign.pub; with --insecure and none given, shadows are refused)")
    .option("--registry-auth <file>", "username:password on the first line, for pulling shadows and reading their signatures from the registry")
    .option("--registry-ca <file>", "CA certificate (PEM) the registry's TLS certificate is checked against when reading signatures (the engine's pulls trust /etc/docker/certs.d)");
}

/** Which containers a client command is about. */
export function filterOptions(cmd: Command): Command {
  return cmd.option("--container <ref>", "only this container (id, prefix or name)").option("--node <name>", "only this node");
}

/** A client command about one container, named by its id, a prefix of it or its name. */
export function containerCommand(program: Command, name: string, description: string): Command {
  return clientOptions(program.command(name).argument("<container>", "container id, id prefix or name").description(description));
}
