#!/usr/bin/env node
/**
 * The `shadowlayer` command. Output for people by default, `--json` for machines; logs go to
 * stderr; errors print one sentence and exit non-zero.
 */
import "./v8-flags.js";
import { Command, Option } from "commander";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { GraphEvent_Type, QueryService, type ContainerSummary } from "../proto/gen/shadowlayer/v1/query_pb.js";
import { initCerts, loadTls } from "../common/certs.js";
import { Code, ShadowError } from "../common/errors.js";
import type { ExecSourceChoice } from "../agent/telemetry/telemetry.js";
import type { WindowSummary } from "../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { agentJson, detectionJson, renderAgents, renderDetections, renderTable, renderTop, windowJson } from "./telemetry-format.js";
import { AdminService } from "../proto/gen/shadowlayer/v1/query_pb.js";
import { parseFeedFlags, type FeedConfig } from "../aggregator/feeds/manager.js";
import { policyFromInit, type PolicyInit } from "../aggregator/index.js";
import type { Policy } from "../proto/gen/shadowlayer/v1/vulns_pb.js";
import { cyclonedx } from "./sbom.js";
import { feedJson, policyJson, renderFeeds, renderScores, renderVulns, scoresJson, vulnJson } from "./vulns-format.js";
import { readFileSync } from "node:fs";
import { callServerStream, callUnary } from "../common/grpc.js";
import { createLogger } from "../common/log.js";
import { VERSION } from "../common/version.js";
import { defaultNodeName, startAgent } from "../agent/agent.js";
import { connectEngine, engineSocket } from "../common/engine.js";
import { startAggregator } from "../aggregator/server.js";
import { explainCallError, queryClient, serviceClient, type ClientFlags } from "./client.js";
import { removeDemo, startDemo } from "./demo.js";
import { dataPaths, defaultDataDir } from "./endpoint.js";
import { renderTree, toLdgJson } from "./ldg-format.js";
import { runUp } from "./up.js";

const out = (line: string) => process.stdout.write(`${line}\n`);

function fail(err: unknown): never {
  const e = ShadowError.from(err);
  process.stderr.write(`shadowlayer: ${e.message}\n`);
  process.exit(1);
}

/** Runs until SIGINT/SIGTERM, then calls stop once. */
function untilSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (sig: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`shadowlayer: ${sig}, stopping\n`);
    stop().then(
      () => process.exit(0),
      (err: unknown) => fail(err),
    );
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
}

const dataDirOption = () =>
  new Option("--data-dir <dir>", "where state, certificates and the endpoint file live (env SHADOWLAYER_DATA_DIR)").default(defaultDataDir());

function clientOptions(cmd: Command): Command {
  return cmd
    .addOption(dataDirOption())
    .option("--aggregator <host:port>", "aggregator address (default: the one `up` wrote in the data dir)")
    .option("--tls-dir <dir>", "certificates (default: <data-dir>/tls)")
    .option("--insecure", "connect without TLS (only to an aggregator started with --insecure)");
}

function clientFlags(o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean }): ClientFlags {
  return {
    dataDir: o.dataDir,
    ...(o.aggregator !== undefined ? { aggregator: o.aggregator } : {}),
    ...(o.tlsDir !== undefined ? { tlsDir: o.tlsDir } : {}),
    ...(o.insecure === true ? { insecure: true } : {}),
  };
}

function warnInsecure(): void {
  process.stderr.write("\n*** WARNING: --insecure: no TLS and no client certificates. Anyone who can reach the port can read and write. Never use this outside a test box. ***\n\n");
}

function table(rows: ContainerSummary[]): string {
  const head = ["CONTAINER", "NAME", "IMAGE", "NODE", "STATE", "LAYERS", "PROCS", "DRIFT"];
  return renderTable(
    head,
    rows.map((r) => [r.containerId.slice(0, 12), r.containerName, r.image, r.node, r.state, String(r.layerCount), String(r.processCount), r.drift ? "yes" : "-"]),
  );
}

interface TelemetryFlags {
  sampleMs: string;
  window: string;
  execSource: string;
  bpftrace?: string;
  spoolMax: string;
}

function telemetryOptions(cmd: Command): Command {
  return cmd
    .option("--sample-ms <ms>", "telemetry sampling tick", "1000")
    .option("--window <seconds>", "telemetry window length (the model's unit of input)", "10")
    .addOption(new Option("--exec-source <source>", "exec events: eBPF when available else /proc polling, or force one").choices(["auto", "ebpf", "proc"]).default("auto"))
    .option("--bpftrace <path>", "bpftrace binary (default: bpftrace on PATH)")
    .option("--spool-max <items>", "telemetry items kept while the aggregator is unreachable (oldest dropped first)", "100000");
}

function positive(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new ShadowError(Code.InvalidArgument, `${name} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

interface ThreatFlags {
  feed?: string[];
  policies?: string;
}

function threatOptions(cmd: Command): Command {
  return cmd
    .option("--feed <KIND=SOURCE...>", "vulnerability feed: osv|kev|epss|nvd = a path (OSV: a directory, a record, or all.zip) or an https URL; repeatable")
    .option("--policies <file>", "JSON array of policies: {name, labels, namespace, rebuild_threshold, switch_threshold, order}");
}

function threatFlags(o: ThreatFlags): { feeds: FeedConfig[]; policies?: Policy[] } {
  const feeds = parseFeedFlags(o.feed ?? []);
  if (o.policies === undefined) return { feeds };
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(o.policies, "utf8"));
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `--policies ${o.policies}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!Array.isArray(raw)) throw new ShadowError(Code.InvalidArgument, `--policies ${o.policies}: expected a JSON array of policies`);
  return { feeds, policies: raw.map((p) => policyFromInit(p as PolicyInit)) };
}

async function withClient<T>(o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean }, admin: boolean, fn: (client: import("@grpc/grpc-js").Client, explain: (err: unknown) => never) => Promise<T>): Promise<T> {
  const { client, address } = admin ? await serviceClient(AdminService, clientFlags(o)) : await queryClient(clientFlags(o));
  try {
    return await fn(client, (err: unknown) => {
      throw explainCallError(err, address);
    });
  } finally {
    client.close();
  }
}

function telemetryFlags(o: TelemetryFlags): { sampleMs: number; windowMs: number; execSource: ExecSourceChoice; bpftrace?: string; spoolMax: number } {
  return {
    sampleMs: positive("--sample-ms", o.sampleMs),
    windowMs: positive("--window", o.window) * 1000,
    execSource: o.execSource as ExecSourceChoice,
    spoolMax: Math.floor(positive("--spool-max", o.spoolMax)),
    ...(o.bpftrace !== undefined ? { bpftrace: o.bpftrace } : {}),
  };
}

const program = new Command();
program
  .name("shadowlayer")
  .description("Layer graphs, per-layer risk and ready shadow containers for a Docker host.\nStart with `shadowlayer up`, then `shadowlayer demo` and `shadowlayer graph <container>`.")
  .version(VERSION)
  .showHelpAfterError();

program
  .command("up")
  .description("run the aggregator and an agent on this host against the local Docker engine (the embedded default)")
  .addOption(dataDirOption())
  .option("--listen <host:port>", "gRPC address of the aggregator", "127.0.0.1:7443")
  .option("--http <host:port>", "aggregator /metrics, /healthz, /readyz", "127.0.0.1:9464")
  .option("--agent-http <host:port>", "agent /metrics, /healthz, /readyz", "127.0.0.1:9465")
  .option("--node <name>", "this node's name (env SHADOWLAYER_NODE, default the hostname)")
  .option("--docker-socket <path>", "Docker engine socket (env DOCKER_HOST)")
  .option("--refresh-ms <ms>", "how often processes are re-read", "2000")
  .option("--insecure", "no TLS between agent and aggregator (loud warning; tests only)")
  .option("--json", "one JSON line per change instead of trees")
  .option("--quiet", "do not print changes");
threatOptions(telemetryOptions(program.commands[program.commands.length - 1] as Command)).action(
  async (o: { dataDir: string; listen: string; http: string; agentHttp: string; node?: string; dockerSocket?: string; refreshMs: string; insecure?: boolean; json?: boolean; quiet?: boolean } & TelemetryFlags & ThreatFlags) => {
    if (o.insecure) warnInsecure();
    try {
      const stop = await runUp(
        {
          ...telemetryFlags(o),
          ...threatFlags(o),
          dataDir: o.dataDir,
          listen: o.listen,
          http: o.http,
          agentHttp: o.agentHttp,
          insecure: o.insecure === true,
          refreshMs: Number(o.refreshMs),
          json: o.json === true,
          quiet: o.quiet === true,
          log: createLogger("shadowlayer"),
          ...(o.node !== undefined ? { node: o.node } : {}),
          ...(o.dockerSocket !== undefined ? { dockerSocket: o.dockerSocket } : {}),
        },
        out,
      );
      untilSignal(stop);
    } catch (err) {
      fail(err);
    }
  },
);

program
  .command("aggregator")
  .description("run the aggregator alone (the Kubernetes Deployment)")
  .addOption(dataDirOption())
  .option("--listen <host:port>", "gRPC address", "0.0.0.0:7443")
  .option("--http <host:port>", "/metrics, /healthz, /readyz", "0.0.0.0:9464")
  .option("--tls-dir <dir>", "ca.crt, aggregator.crt, aggregator.key (default: <data-dir>/tls)")
  .option("--insecure", "no TLS (loud warning; tests only)");
threatOptions(program.commands[program.commands.length - 1] as Command).action(
  async (o: { dataDir: string; listen: string; http: string; tlsDir?: string; insecure?: boolean } & ThreatFlags) => {
    if (o.insecure) warnInsecure();
    try {
      const tls = o.insecure ? "insecure" : await loadTls(o.tlsDir ?? dataPaths(o.dataDir).tls, { role: "aggregator" });
      const a = await startAggregator({ dataDir: o.dataDir, listen: o.listen, http: o.http, tls, log: createLogger("shadowlayer-aggregator"), ...threatFlags(o) });
      untilSignal(() => a.stop());
    } catch (err) {
      fail(err);
    }
  },
);

program
  .command("agent")
  .description("run a node agent alone (the Kubernetes DaemonSet)")
  .addOption(dataDirOption())
  .option("--aggregator <host:port>", "aggregator address (env SHADOWLAYER_AGGREGATOR)", process.env["SHADOWLAYER_AGGREGATOR"])
  .option("--node <name>", "node name (env SHADOWLAYER_NODE, default the hostname)")
  .option("--docker-socket <path>", "Docker engine socket (env DOCKER_HOST)")
  .option("--docker-root <dir>", "the engine's data root as mounted here (default: what the engine reports)")
  .option("--proc-root <dir>", "the host's /proc as mounted here", "/proc")
  .option("--http <host:port>", "/metrics, /healthz, /readyz", "127.0.0.1:9465")
  .option("--tls-dir <dir>", "ca.crt, agent-<node>.crt, agent-<node>.key (default: <data-dir>/tls)")
  .option("--cgroup-root <dir>", "the host's cgroup filesystem as mounted here", "/sys/fs/cgroup")
  .option("--refresh-ms <ms>", "how often processes are re-read", "2000")
  .option("--insecure", "no TLS (loud warning; tests only)");
telemetryOptions(program.commands[program.commands.length - 1] as Command).action(
  async (o: { dataDir: string; aggregator?: string; node?: string; dockerSocket?: string; dockerRoot?: string; procRoot: string; cgroupRoot: string; http: string; tlsDir?: string; refreshMs: string; insecure?: boolean } & TelemetryFlags) => {
    if (o.insecure) warnInsecure();
    try {
      const name = o.node ?? defaultNodeName();
      const tls = o.insecure ? "insecure" : await loadTls(o.tlsDir ?? dataPaths(o.dataDir).tls, { role: "agent", node: name });
      const a = await startAgent({
        node: name,
        procRoot: o.procRoot,
        http: o.http,
        tls,
        refreshMs: Number(o.refreshMs),
        log: createLogger("shadowlayer-agent"),
        dataDir: o.dataDir,
        cgroupRoot: o.cgroupRoot,
        ...telemetryFlags(o),
        ...(o.aggregator !== undefined ? { aggregator: o.aggregator } : {}),
        ...(o.dockerSocket !== undefined ? { dockerSocket: o.dockerSocket } : {}),
        ...(o.dockerRoot !== undefined ? { dockerRoot: o.dockerRoot } : {}),
      });
      untilSignal(() => a.stop());
    } catch (err) {
      fail(err);
    }
  },
);

clientOptions(program.command("graph").argument("<container>", "container id, id prefix or name").description("print a container's Layer Dependency Graph"))
  .option("--json", "the seed-shaped LDG JSON")
  .action(async (container: string, o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean }) => {
    try {
      const { client, address } = await queryClient(clientFlags(o));
      try {
        const g = await callUnary(client, QueryService.method.getLayerGraph, { container }).catch((err: unknown) => {
          throw explainCallError(err, address);
        });
        out(o.json ? JSON.stringify(toLdgJson(g), null, 2) : renderTree(g));
      } finally {
        client.close();
      }
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("containers").alias("ps").description("list the containers the aggregator knows"))
  .option("--node <name>", "only this node")
  .option("--json", "JSON array")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean; node?: string }) => {
    try {
      const { client, address } = await queryClient(clientFlags(o));
      try {
        const res = await callUnary(client, QueryService.method.listContainers, { node: o.node ?? "" }).catch((err: unknown) => {
          throw explainCallError(err, address);
        });
        if (o.json) {
          out(
            JSON.stringify(
              res.containers.map((c) => ({
                container_id: c.containerId,
                container_name: c.containerName,
                image: c.image,
                node: c.node,
                state: c.state,
                layer_count: c.layerCount,
                process_count: c.processCount,
                drift: c.drift,
                observed_at: c.observedAt ? timestampDate(c.observedAt).toISOString() : null,
              })),
              null,
              2,
            ),
          );
        } else out(table(res.containers));
      } finally {
        client.close();
      }
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("watch").description("follow graph changes as they happen (Ctrl-C stops)"))
  .option("--json", "one JSON object per line")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean }) => {
    try {
      const { client, address } = await queryClient(clientFlags(o));
      const stream = callServerStream(client, QueryService.method.watchGraphs, {});
      stream.on("data", (ev) => {
        const type = GraphEvent_Type[ev.type]?.toLowerCase() ?? "unknown";
        if (o.json) out(JSON.stringify({ type, container_id: ev.containerId, ...(ev.graph ? { graph: toLdgJson(ev.graph) } : {}) }));
        else if (ev.type === GraphEvent_Type.UPSERT && ev.graph) out(renderTree(ev.graph));
        else if (ev.type === GraphEvent_Type.DELETE) out(`- ${ev.containerId.slice(0, 12)} removed`);
        else if (ev.type === GraphEvent_Type.SNAPSHOT_DONE) out("-- live --");
      });
      stream.on("error", (err) => fail(explainCallError(err, address)));
      untilSignal(async () => {
        stream.cancel();
        client.close();
      });
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("top").description("per-layer CPU, memory, I/O, execs and connections, live from the latest telemetry windows (Ctrl-C stops)"))
  .option("--container <ref>", "only this container (id, prefix or name)")
  .option("--node <name>", "only this node")
  .option("--once", "print the latest windows once and exit")
  .option("--json", "one JSON object per window (with --once: a JSON array)")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean; once?: boolean; container?: string; node?: string }) => {
    try {
      const { client, address } = await queryClient(clientFlags(o));
      const latest = new Map<string, WindowSummary>();
      let live = false;
      let timer: NodeJS.Timeout | undefined;
      const tty = process.stdout.isTTY === true;
      const draw = () => {
        timer = undefined;
        const text = renderTop([...latest.values()]);
        if (tty) process.stdout.write("\x1b[H\x1b[2J");
        out(`shadowlayer top  ${new Date().toISOString().slice(11, 19)}  ${latest.size} containers (per-layer figures over each container's latest window)`);
        out(text);
        if (!tty) out("");
      };
      const stream = callServerStream(client, QueryService.method.watchTelemetry, { container: o.container ?? "", node: o.node ?? "" });
      stream.on("data", (ev) => {
        const b = ev.body;
        if (b.case === "window") {
          latest.set(b.value.containerId, b.value);
          if (o.json && !o.once) out(JSON.stringify(windowJson(b.value)));
          else if (live && !o.json) timer ??= setTimeout(draw, 200);
        } else if (b.case === "snapshotDone") {
          live = true;
          if (o.once) {
            out(o.json ? JSON.stringify([...latest.values()].map(windowJson), null, 2) : renderTop([...latest.values()]));
            stream.cancel();
            client.close();
            return;
          }
          if (!o.json) draw();
        }
      });
      stream.on("error", (err: { code?: number }) => {
        if (err.code === 1) return; // cancelled by us
        fail(explainCallError(err, address));
      });
      if (!o.once)
        untilSignal(async () => {
          stream.cancel();
          client.close();
        });
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("detections").description("runtime detections (drift: an executable not from any image layer was run)"))
  .option("--container <ref>", "only this container (id, prefix or name)")
  .option("--node <name>", "only this node")
  .option("--limit <n>", "the newest n", "100")
  .option("--json", "JSON array")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean; container?: string; node?: string; limit: string }) => {
    try {
      await withClient(o, false, async (client, explain) => {
        const res = await callUnary(client, QueryService.method.listDetections, { container: o.container ?? "", node: o.node ?? "", limit: Math.floor(positive("--limit", o.limit)) }).catch(explain);
        out(o.json ? JSON.stringify(res.detections.map(detectionJson), null, 2) : res.detections.length === 0 ? "no detections" : renderDetections(res.detections));
      });
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("agents").description("agents, their exec-event source (eBPF or /proc polling), lost events, spool and node load"))
  .option("--json", "JSON array")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean }) => {
    try {
      await withClient(o, false, async (client, explain) => {
        const res = await callUnary(client, QueryService.method.listAgents, {}).catch(explain);
        out(o.json ? JSON.stringify(res.agents.map(agentJson), null, 2) : renderAgents(res.agents));
      });
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("scores").description("per-container and per-layer risk (threat, drift, anomaly) against each environment's policy, riskiest first"))
  .option("--container <ref>", "only this container (id, prefix or name)")
  .option("--node <name>", "only this node")
  .option("--watch", "follow changes (Ctrl-C stops)")
  .option("--json", "JSON (with --watch: one object per change)")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean; watch?: boolean; container?: string; node?: string }) => {
    try {
      if (o.watch) {
        const { client, address } = await queryClient(clientFlags(o));
        const stream = callServerStream(client, QueryService.method.watchScores, { node: o.node ?? "" });
        stream.on("data", (ev) => {
          if (ev.scores === undefined) return;
          out(o.json ? JSON.stringify(scoresJson(ev.scores)) : renderScores([ev.scores]).split("\n")[1] ?? "");
        });
        stream.on("error", (err: { code?: number }) => {
          if (err.code !== 1) fail(explainCallError(err, address));
        });
        untilSignal(async () => {
          stream.cancel();
          client.close();
        });
        return;
      }
      await withClient(o, false, async (client, explain) => {
        const res = await callUnary(client, QueryService.method.listScores, { container: o.container ?? "", node: o.node ?? "" }).catch(explain);
        out(o.json ? JSON.stringify(res.containers.map(scoresJson), null, 2) : res.containers.length === 0 ? "no containers scored yet" : renderScores(res.containers));
      });
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("vulns").argument("<container>", "container id, id prefix or name").description("a container's vulnerabilities: package, layer, fix, CVSS, EPSS, KEV and each one's threat"))
  .option("--json", "JSON with the scores and every match")
  .action(async (container: string, o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean }) => {
    try {
      await withClient(o, false, async (client, explain) => {
        const r = await callUnary(client, QueryService.method.getVulns, { container }).catch(explain);
        if (o.json) {
          out(JSON.stringify({ scores: r.scores && scoresJson(r.scores), os: r.os && { id: r.os.id, version_id: r.os.versionId }, packages: r.packages, partial: r.partial.map((p) => ({ layer_id: p.layerId, path: p.path, reason: p.reason })), vulnerabilities: r.matches.map(vulnJson) }, null, 2));
          return;
        }
        const s = r.scores;
        if (s !== undefined) out(`${s.containerName || s.containerId.slice(0, 12)}: risk ${s.risk.toFixed(1)}, threat ${s.threat.toFixed(1)}, ${r.matches.length} vulnerabilities in ${r.packages} packages${r.os ? ` (${r.os.id} ${r.os.versionId})` : ""}; policy ${s.policy?.name} rebuild at ${s.policy?.rebuildThreshold}, switch at ${s.policy?.switchThreshold}`);
        for (const c of s?.caveats ?? []) out(`  note: ${c}`);
        if (r.matches.length > 0) out(renderVulns(r.matches));
      });
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("sbom").argument("<container>", "container id, id prefix or name").description("the container image's packages as CycloneDX 1.5 JSON, each component with its layer"))
  .action(async (container: string, o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean }) => {
    try {
      await withClient(o, false, async (client, explain) => {
        const r = await callUnary(client, QueryService.method.getInventory, { container }).catch(explain);
        if (r.graph === undefined || r.inventory === undefined) throw new ShadowError(Code.NotFound, `no inventory for ${container}`);
        out(JSON.stringify(await cyclonedx(r.graph, r.inventory), null, 2));
      });
    } catch (err) {
      fail(err);
    }
  });

clientOptions(program.command("feeds").description("vulnerability feeds: source, last refresh, records accepted and rejected (and why), staleness"))
  .option("--refresh [name]", "refresh now (all feeds, or the one named) and show the result")
  .option("--json", "JSON array")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean; refresh?: string | boolean }) => {
    try {
      const refresh = o.refresh !== undefined;
      await withClient(o, refresh, async (client, explain) => {
        const res = refresh
          ? await callUnary(client, AdminService.method.refreshFeeds, { name: typeof o.refresh === "string" ? o.refresh : "" }, { deadlineMs: 600_000 }).catch(explain)
          : await callUnary(client, QueryService.method.listFeeds, {}).catch(explain);
        out(o.json ? JSON.stringify(res.feeds.map(feedJson), null, 2) : renderFeeds(res.feeds));
      });
    } catch (err) {
      fail(err);
    }
  });

const policy = program.command("policy").description("per-environment thresholds (rebuild, switch), selected by container labels or namespace");
clientOptions(policy.command("list").description("the policies, in the order they are tried"))
  .option("--json", "JSON array")
  .action(async (o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; json?: boolean }) => {
    try {
      await withClient(o, true, async (client, explain) => {
        const r = await callUnary(client, AdminService.method.listPolicies, {}).catch(explain);
        if (o.json) out(JSON.stringify(r.policies.map(policyJson), null, 2));
        else
          out(
            renderTable(
              ["NAME", "ORDER", "SELECTOR", "REBUILD", "SWITCH"],
              r.policies.map((p) => [p.name, String(p.order), [...Object.entries(p.labels).map(([k, v]) => `${k}=${v}`), ...(p.namespace ? [`namespace=${p.namespace}`] : [])].join(",") || "*", String(p.rebuildThreshold), String(p.switchThreshold)]),
            ),
          );
      });
    } catch (err) {
      fail(err);
    }
  });
clientOptions(policy.command("set").argument("<name>", "policy name").description("create or replace a policy; scores are recomputed at once"))
  .requiredOption("--rebuild <risk>", "risk (0-100) at which a shadow rebuild is scheduled")
  .requiredOption("--switch <risk>", "risk (0-100) at which the container is switched to its shadow")
  .option("--label <key=value...>", "container labels that select this policy (all must match)")
  .option("--namespace <ns>", "Kubernetes namespace that selects this policy")
  .option("--order <n>", "lower is tried first", "100")
  .action(async (name: string, o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean; rebuild: string; switch: string; label?: string[]; namespace?: string; order: string }) => {
    try {
      const labels: Record<string, string> = {};
      for (const l of o.label ?? []) {
        const eq = l.indexOf("=");
        if (eq <= 0) throw new ShadowError(Code.InvalidArgument, `--label ${l}: expected key=value`);
        labels[l.slice(0, eq)] = l.slice(eq + 1);
      }
      const p = policyFromInit({ name, labels, ...(o.namespace !== undefined ? { namespace: o.namespace } : {}), rebuild_threshold: Number(o.rebuild), switch_threshold: Number(o.switch), order: Number(o.order) });
      await withClient(o, true, async (client, explain) => {
        const r = await callUnary(client, AdminService.method.setPolicy, { policy: p }).catch(explain);
        out(`policy ${r.name} set: rebuild at ${r.rebuildThreshold}, switch at ${r.switchThreshold}`);
      });
    } catch (err) {
      fail(err);
    }
  });
clientOptions(policy.command("delete").argument("<name>", "policy name").description("remove a policy (the default policy stays)"))
  .action(async (name: string, o: { dataDir: string; aggregator?: string; tlsDir?: string; insecure?: boolean }) => {
    try {
      await withClient(o, true, async (client, explain) => {
        await callUnary(client, AdminService.method.deletePolicy, { name }).catch(explain);
        out(`policy ${name} deleted`);
      });
    } catch (err) {
      fail(err);
    }
  });

const certs = program.command("certs").description("manage the mTLS certificates");
certs
  .command("init")
  .description("make a CA, the aggregator's certificate, one per agent node and one for CLI clients (existing files are kept)")
  .addOption(dataDirOption())
  .option("--tls-dir <dir>", "where to write them (default: <data-dir>/tls)")
  .option("--node <name...>", "node names to make agent certificates for (default: this host's name)")
  .option("--san <name...>", "extra DNS names or IPs for the aggregator certificate")
  .option("--json", "machine-readable result")
  .action(async (o: { dataDir: string; tlsDir?: string; node?: string[]; san?: string[]; json?: boolean }) => {
    try {
      const r = await initCerts(o.tlsDir ?? dataPaths(o.dataDir).tls, { nodes: o.node ?? [defaultNodeName()], sans: o.san ?? [] });
      if (o.json) out(JSON.stringify(r));
      else out(`certificates in ${r.dir}\n  created: ${r.created.join(", ") || "-"}\n  kept:    ${r.kept.join(", ") || "-"}`);
    } catch (err) {
      fail(err);
    }
  });

program
  .command("demo")
  .description("start a small demo workload (web server, worker, volume writer) from locally built images")
  .option("--port <port>", "loopback port of the demo web server", "18080")
  .option("--down", "remove the demo containers instead")
  .option("--docker-socket <path>", "Docker engine socket (env DOCKER_HOST)")
  .action(async (o: { port: string; down?: boolean; dockerSocket?: string }) => {
    try {
      const { docker } = await connectEngine(engineSocket(o.dockerSocket));
      if (o.down) {
        out(`removed ${await removeDemo(docker)} demo containers`);
        return;
      }
      const started = await startDemo(docker, Number(o.port), (m) => process.stderr.write(`${m}\n`));
      for (const c of started) out(`started ${c.name} (${c.id.slice(0, 12)}): ${c.what}`);
      out("see them with `shadowlayer containers` and `shadowlayer graph shadowlayer-demo-worker`; remove with `shadowlayer demo --down`");
    } catch (err) {
      fail(err);
    }
  });

await program.parseAsync(process.argv);
