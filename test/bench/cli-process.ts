/**
 * The agent and the aggregator as the operator runs them: each its own `shadowlayer` process (the
 * built CLI), so /proc can tell their costs apart. Both listen on loopback, without TLS, on ports
 * chosen here. SL_BENCH_CPU_PROF=<dir> runs them under `--cpu-prof` (a profile per process, written
 * when it stops) to see where a figure comes from.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { waitFor } from "../harness/engine.js";

export interface CliProcess {
  readonly pid: number;
  /** The /metrics, /healthz and /readyz port. */
  readonly httpPort: number;
  /** The last few kB of its stderr (its log), for failures. */
  stderrTail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export interface AggregatorProcess extends CliProcess {
  /** The gRPC port. */
  readonly port: number;
}

/** A loopback port free at the time of asking. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

const running = new Set<CliProcess>();

/** Stops every process started here that still runs (for a benchmark interrupted midway). */
export async function stopAllCliProcesses(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop(5_000)));
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

async function spawnCli(args: string[], httpPort: number, what: string): Promise<CliProcess> {
  const prof = process.env["SL_BENCH_CPU_PROF"];
  const node = prof !== undefined && prof !== "" ? ["--cpu-prof", "--cpu-prof-dir", prof] : [];
  const child = spawn(process.execPath, [...node, join(PACKAGE_ROOT, "dist/cli/main.js"), ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
  const proc: CliProcess = {
    pid: child.pid ?? 0,
    httpPort,
    stderrTail: () => stderr,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited(child);
      clearTimeout(t);
    },
  };
  running.add(proc);
  void exited(child).then(() => running.delete(proc));
  try {
    await waitFor(
      `${what} /readyz`,
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode})`);
        return (await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.ok).catch(() => false)) || undefined;
      },
      60_000,
      250,
    );
  } catch (err) {
    await proc.stop(2_000);
    throw new Error(`${String(err)}; ${what} stderr: ${stderr}`, { cause: err });
  }
  return proc;
}

/** `shadowlayer aggregator --insecure` on loopback, its data in `dataDir`, no feed. */
export async function startAggregatorProcess(dataDir: string): Promise<AggregatorProcess> {
  const port = await freePort();
  const httpPort = await freePort();
  const p = await spawnCli(["aggregator", "--insecure", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--http", `127.0.0.1:${httpPort}`], httpPort, "aggregator");
  return { ...p, port };
}

/** `shadowlayer agent --insecure` for `node`, sending to `aggregatorPort`, sampling at 1 Hz, 10 s windows. */
export async function startAgentProcess(dataDir: string, node: string, aggregatorPort: number): Promise<CliProcess> {
  const httpPort = await freePort();
  return spawnCli(
    ["agent", "--insecure", "--node", node, "--aggregator", `127.0.0.1:${aggregatorPort}`, "--data-dir", dataDir, "--http", `127.0.0.1:${httpPort}`, "--sample-ms", "1000", "--window", "10"],
    httpPort,
    "agent",
  );
}

/** A Prometheus text scrape, as series (name with labels) -> value. */
export async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
