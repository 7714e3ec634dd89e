/**
 * What the programs keep on disk is the user's alone: the data dir, the aggregator's store and the
 * agent's state directories 0700, their level files 0600, endpoint.json 0600; made so, and
 * tightened (and logged) when an earlier version or a loose umask left them open.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { tempDir } from "../harness/temp-dir.js";
import { pino } from "pino";
import { AgentState } from "../../agent/state/agent-state.js";
import { startAggregator } from "../../aggregator/index.js";
import { writeEndpoint } from "../../cli/endpoint.js";
import type { Logger } from "../../common/log.js";

const modeOf = async (p: string) => (await stat(p)).mode & 0o7777;

/** A logger that keeps each line's message and fields. */
function recordingLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  return { log: pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

/** Every file directly in `dir` with its mode. */
async function fileModes(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const e of await readdir(dir, { withFileTypes: true })) if (e.isFile()) out.set(e.name, await modeOf(join(dir, e.name)));
  return out;
}

/** Opens everything up as a umask of 0 or an older version would have left it. */
async function loosen(dirs: string[]): Promise<void> {
  for (const d of dirs) {
    await chmod(d, 0o755);
    for (const name of (await fileModes(d)).keys()) await chmod(join(d, name), 0o644);
  }
}

const assertPrivate = async (dirs: string[], levelDir: string) => {
  for (const d of dirs) assert.equal((await modeOf(d)).toString(8), "700", d);
  const files = await fileModes(levelDir);
  assert.ok(files.size > 0);
  for (const [name, mode] of files) assert.equal(mode.toString(8), "600", name);
};

describe("private data on disk", () => {
  const tmp = tempDir("sl-private-");

  it("aggregator: data dir and store 0700, store files 0600; looser ones tightened and logged", async () => {
    const dataDir = join(tmp.path, "agg", "data");
    const store = join(dataDir, "store");
    const first = recordingLogger();
    const agg = await startAggregator({ dataDir, listen: "127.0.0.1:0", tls: "insecure", log: first.log });
    await assertPrivate([dataDir, store], store);
    await agg.stop();
    const early = first.lines.filter((l) => /tightened/.test(String(l["msg"])));
    assert.deepEqual(early, [], "nothing to tighten when made private");

    await loosen([dataDir, store]);
    const again = recordingLogger();
    const agg2 = await startAggregator({ dataDir, listen: "127.0.0.1:0", tls: "insecure", log: again.log });
    await assertPrivate([dataDir, store], store);
    await agg2.stop();
    const said = again.lines.filter((l) => /tightened/.test(String(l["msg"])));
    assert.deepEqual(said.map((l) => l["dir"]).sort(), [dataDir, store, store].sort(), "the data dir, the store dir and the store's files");
    assert.ok(said.every((l) => l["level"] === 40), "as warnings");
  });

  it("agent: data dir, agent-<node> and state 0700, state files 0600; looser ones tightened and logged", async () => {
    const dataDir = join(tmp.path, "agent-data");
    const agentDir = join(dataDir, "agent-n1");
    const stateDir = join(agentDir, "state");
    const first = recordingLogger();
    const state = new AgentState(agentDir, first.log);
    await state.start();
    await state.spool.put("x", new TextEncoder().encode("argv and paths"));
    await state.stop();
    await assertPrivate([dataDir, agentDir, stateDir], stateDir);

    await loosen([dataDir, agentDir, stateDir]);
    const again = recordingLogger();
    const state2 = new AgentState(agentDir, again.log);
    await state2.start();
    await assertPrivate([dataDir, agentDir, stateDir], stateDir);
    await state2.stop();
    const said = again.lines.filter((l) => /tightened/.test(String(l["msg"])));
    assert.deepEqual(said.map((l) => l["dir"]).sort(), [dataDir, agentDir, stateDir, stateDir].sort());
  });

  it("leaves a shared sticky directory as it is, with a warning", async () => {
    const shared = join(tmp.path, "shared");
    await mkdir(shared);
    await chmod(shared, 0o1777);
    const { log, lines } = recordingLogger();
    const state = new AgentState(join(shared, "agent-n2"), log);
    await state.start();
    await state.stop();
    assert.equal((await modeOf(shared)).toString(8), "1777");
    assert.equal((await modeOf(join(shared, "agent-n2"))).toString(8), "700");
    assert.ok(lines.some((l) => l["dir"] === shared && /shared directory/.test(String(l["msg"]))));
  });

  it("endpoint.json: 0600 when made, and when it was there looser", async () => {
    const dataDir = join(tmp.path, "endpoint");
    await mkdir(dataDir, { mode: 0o700 });
    const e = { address: "127.0.0.1:1", insecure: false, pid: 1, node: "n", startedAt: "" };
    await writeEndpoint(dataDir, e);
    assert.equal((await modeOf(join(dataDir, "endpoint.json"))).toString(8), "600");
    await writeFile(join(dataDir, "endpoint.json"), "{}", { mode: 0o644 });
    await chmod(join(dataDir, "endpoint.json"), 0o644);
    await writeEndpoint(dataDir, e);
    assert.equal((await modeOf(join(dataDir, "endpoint.json"))).toString(8), "600");
  });
});
