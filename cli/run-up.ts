/**
 * `shadowlayer up`: the embedded default. Aggregator and agent in one process on this host, the
 * store and certificates under the data dir, and a live view of containers as they change.
 * Imported by its command's action only: it loads the agent and the aggregator.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import type { LayerGraph } from "../proto/gen/shadowlayer/v1/graph_pb.js";
import { RebuildState } from "../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { SwitchoverKind, SwitchoverOutcome, SwitchoverTrigger } from "../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { Policy } from "../proto/gen/shadowlayer/v1/vulns_pb.js";
import { join, resolve } from "node:path";
import { z } from "zod";
import { initCerts, loadTls, tlsFiles } from "../common/certs.js";
import { resolveSettings, SHARED, type Env } from "../common/config.js";
import { writePrivateFile } from "../common/private-files.js";
import { dialAddress, splitHostPort } from "../common/listen-address.js";
import { createLogger } from "../common/log.js";
import { resolveAgentConfig, startAgent, type AgentConfig, type AgentFlags } from "../agent/index.js";
import { DEFAULT_FALCO_PATH, resolveAggregatorConfig, startAggregator, summarize, type AggregatorConfig, type AggregatorFlags } from "../aggregator/index.js";
import { dataPaths, removeEndpoint, writeEndpoint } from "./endpoint.js";
import { renderTree } from "./ldg-format.js";
import { readPolicyFile } from "./policy-input.js";
import { safeLine } from "./terminal-safe.js";

/** What `up` takes: the aggregator's flags and the agent's (its HTTP endpoint as --agent-http), and how to print. */
export type UpFlags = AggregatorFlags & AgentFlags & { agentHttp?: string; json?: boolean; quiet?: boolean };

export interface UpConfig {
  aggregator: AggregatorConfig;
  policies?: Policy[];
  agent: AgentConfig;
  json: boolean;
  quiet: boolean;
}

/** The two programs' configurations composed: loopback addresses, one data dir, the agent dialing the aggregator beside it. */
export function resolveUpConfig(o: UpFlags, env: Env): UpConfig {
  const aggregator = resolveAggregatorConfig({ ...o, listen: o.listen ?? "127.0.0.1:7443", http: o.http ?? "127.0.0.1:9464", ...falcoTokenDefault(o, env) }, env);
  const agent = resolveAgentConfig(
    // `up` is the single-host default on a Docker engine (its demo and switchovers act through it).
    { ...o, http: o.agentHttp, aggregator: undefined, runtime: "docker" },
    env,
    // The agent dials the aggregator `up` starts, whatever SHADOWLAYER_AGGREGATOR says.
    { http: { flag: "--agent-http" }, aggregator: {} },
  );
  return {
    aggregator,
    ...(aggregator.policiesFile !== undefined ? { policies: readPolicyFile(aggregator.policiesFile) } : {}),
    agent,
    json: o.json === true,
    quiet: o.quiet === true,
  };
}

/** The token file `up` makes for the Falco intake when it is asked to listen with neither a token nor mTLS. */
const FALCO_TOKEN_FILE = "falco.token";

function falcoTokenDefault(o: UpFlags, env: Env): { falcoTokenFile?: string } {
  const listens = o.falcoListen !== undefined || (env["SHADOWLAYER_FALCO_LISTEN"] ?? "") !== "";
  const hasToken = o.falcoTokenFile !== undefined || (env["SHADOWLAYER_FALCO_TOKEN_FILE"] ?? "") !== "";
  if (!listens || hasToken || o.falcoMtls === true) return {};
  const { dataDir } = resolveSettings(z.object({ dataDir: SHARED.dataDir.schema }), o, env, { dataDir: SHARED.dataDir.source });
  return { falcoTokenFile: join(resolve(dataDir), FALCO_TOKEN_FILE) };
}

/** Makes the Falco intake's token file under the data dir if it is `up`'s own and missing (0600). */
export async function ensureFalcoToken(c: UpConfig, dataDir: string, out: (line: string) => void): Promise<void> {
  const file = c.aggregator.aggregator.falco?.tokenFile;
  if (file === undefined || file !== join(resolve(dataDir), FALCO_TOKEN_FILE) || existsSync(file)) return;
  await writePrivateFile(file, `${randomBytes(32).toString("hex")}\n`);
  out(`Falco intake token made in ${file}`);
}

function stamp(): string {
  return new Date().toISOString().slice(11, 19);
}

export async function runUp(c: UpConfig, out: (line: string) => void): Promise<() => Promise<void>> {
  const log = createLogger("shadowlayer", c.agent.logLevel);
  const dataDir = c.aggregator.aggregator.dataDir;
  const paths = dataPaths(dataDir);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const node = c.agent.agent.node;
  if (!c.aggregator.insecure) {
    const made = await initCerts(c.aggregator.tlsDir, { nodes: [node], detector: c.aggregator.aggregator.falco?.mtls === true });
    if (made.created.length > 0) out(`certificates made in ${c.aggregator.tlsDir}: ${made.created.join(", ")}`);
  }
  await ensureFalcoToken(c, dataDir, out);
  const listen = c.aggregator.aggregator.listen;
  const http = c.aggregator.aggregator.http ?? "";
  const aggregator = await startAggregator({
    ...c.aggregator.aggregator,
    dataDir: paths.dir,
    tls: c.aggregator.insecure ? "insecure" : await loadTls(c.aggregator.tlsDir, { role: "aggregator" }),
    log,
    ...(c.policies !== undefined ? { policies: c.policies } : {}),
  });
  const address = dialAddress(listen, aggregator.port);

  const seen = new Set<string>();
  const onUpsert = (g: LayerGraph) => {
    if (c.quiet) return;
    if (c.json) {
      out(JSON.stringify({ event: "upsert", container_id: g.containerId, name: g.containerName, state: g.state, layers: g.layers.length }));
      return;
    }
    const s = summarize(g);
    const first = !seen.has(g.containerId);
    seen.add(g.containerId);
    out(safeLine`${stamp()} ${first ? "+" : "~"} ${s.containerName || s.containerId.slice(0, 12)} ${s.state} ${s.image}: ${s.layerCount} layers, ${s.processCount} processes${s.drift ? ", DRIFT" : ""}`);
    if (first) out(renderTree(g));
  };
  const onDelete = (id: string) => {
    if (c.quiet) return;
    seen.delete(id);
    out(c.json ? JSON.stringify({ event: "delete", container_id: id }) : safeLine`${stamp()} - ${id.slice(0, 12)} removed`);
  };
  aggregator.store.on("upsert", onUpsert);
  aggregator.telemetry.on("detection", (d) => {
    if (c.quiet) return;
    out(
      c.json
        ? JSON.stringify({ event: "detection", rule: d.rule, reason: d.reason, container_id: d.containerId, layer_id: d.layerId, path: d.path, pid: d.pid, source: d.source })
        : safeLine`${stamp()} ! DRIFT ${d.containerName || d.containerId.slice(0, 12)}: ${d.path} (pid ${d.pid}, ${d.reason}, layer ${d.layerId.slice(0, 19)}, via ${d.source})`,
    );
  });
  aggregator.store.on("delete", onDelete);
  // Rebuild jobs as they move: one line per state (and per node that prepared the shadow), not per step.
  const lastSeen = new Map<string, string>();
  aggregator.rebuilds?.on("upsert", (j) => {
    if (c.quiet) return;
    const prepared = j.preparations.filter((p) => p.state === "prepared").length;
    const key = `${j.state}/${prepared}`;
    if (lastSeen.get(j.id) === key) return;
    lastSeen.set(j.id, key);
    const state = RebuildState[j.state]?.toLowerCase() ?? "unknown";
    if (c.json) {
      out(JSON.stringify({ event: "rebuild", job: j.id, image: j.image, state, strategy: j.strategy, reasons: j.reasons, shadow: j.shadow?.reference ?? "", prepared, error: j.error }));
      return;
    }
    const why = j.state === RebuildState.FAILED || (j.state === RebuildState.QUEUED && j.error !== "") ? `: ${j.error}` : "";
    const shadow = j.state === RebuildState.READY && j.shadow !== undefined ? ` -> ${j.shadow.reference.slice(0, 80)}${prepared > 0 ? `, prepared for ${prepared} container(s)` : ""}` : "";
    out(safeLine`${stamp()} * rebuild ${j.id.slice(0, 12)} ${j.image} (${j.reasons.slice(0, 3).join(", ")}): ${state}${j.strategy !== "" ? ` (${j.strategy})` : ""}${shadow}${why.slice(0, 200)}`);
  });
  // Switchovers and rollbacks: one line per outcome change.
  const lastOutcome = new Map<string, SwitchoverOutcome>();
  aggregator.switchovers.on("upsert", (r) => {
    if (c.quiet || lastOutcome.get(r.id) === r.outcome) return;
    lastOutcome.set(r.id, r.outcome);
    const kind = SwitchoverKind[r.kind]?.toLowerCase() ?? "unknown";
    const outcome = SwitchoverOutcome[r.outcome]?.toLowerCase().replace("_", " ") ?? "unknown";
    const trigger = SwitchoverTrigger[r.trigger]?.toLowerCase() ?? "unknown";
    if (c.json) {
      out(JSON.stringify({ event: kind, id: r.id, container_id: r.containerId, shadow_container_id: r.shadowContainerId, trigger, outcome, reason: r.reason, switch_ms: r.switchMs, error: r.error }));
      return;
    }
    const took = r.switchMs > 0 ? ` (traffic moved in ${r.switchMs.toFixed(0)} ms)` : "";
    const why = r.error !== "" ? `: ${r.error.slice(0, 200)}` : r.waitingForJob !== "" && r.outcome === SwitchoverOutcome.WAITING ? `: waiting for rebuild ${r.waitingForJob.slice(0, 12)}` : "";
    out(safeLine`${stamp()} > ${kind} ${r.containerName || r.containerId.slice(0, 12)} (${trigger}: ${r.reason.slice(0, 120)}): ${outcome}${took}${why}`);
  });

  let agent;
  try {
    agent = await startAgent({
      ...c.agent.agent,
      // Without TLS the aggregator beside it made its signing key in the data dir: trust its public half.
      ...(c.agent.agent.signingKeyPub === undefined && c.aggregator.insecure ? { signingKeyPub: join(paths.dir, "signing", tlsFiles.signingPub) } : {}),
      dataDir: paths.dir,
      aggregator: address,
      tls: c.agent.insecure ? "insecure" : await loadTls(c.agent.tlsDir, { role: "agent", node }),
      log,
    });
  } catch (err) {
    await aggregator.stop();
    throw err;
  }
  await writeEndpoint(dataDir, { address, insecure: c.aggregator.insecure, pid: process.pid, node, startedAt: new Date().toISOString() });
  out(
    `shadowlayer up: aggregator ${address} (${c.aggregator.insecure ? "INSECURE" : "mTLS"}), metrics http://${dialAddress(http, aggregator.httpPort ?? 0)}/metrics, ` +
      `agent node ${node}, ${agent.runtime.kind} ${agent.runtime.version}, exec events via ${agent.telemetry.activeExecSource}; data in ${paths.dir}. ` +
      "Try `shadowlayer demo`, `shadowlayer graph <container>` and `shadowlayer top`. Ctrl-C stops.",
  );
  const falco = c.aggregator.aggregator.falco;
  if (falco !== undefined) {
    const auth = [falco.tokenFile !== undefined ? `token in ${falco.tokenFile}` : "", falco.mtls === true ? "client certificates (detector, admin)" : ""].filter((a) => a !== "").join(" or ");
    out(`Falco intake: ${aggregator.falco?.url ?? `${c.aggregator.insecure ? "http" : "https"}://${dialAddress(falco.listen, splitHostPort(falco.listen).port)}${DEFAULT_FALCO_PATH}`} (${auth})`);
  }
  return async () => {
    await agent.stop();
    await aggregator.stop();
    await removeEndpoint(dataDir);
  };
}
