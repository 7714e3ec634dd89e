/**
 * Crash safety: a process hosting the agent's switchover parts (test/harness/switchover-host.ts:
 * the real state database, journal, records, proxy, machine and recovery) SIGKILLs itself right
 * after each step of a switchover, in both modes; restarted, it recovers. Each time the service
 * ends up served by exactly one container, through the restarted proxy, and the record and the
 * journal say what happened (forward once traffic had moved, else rolled back).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import type Docker from "dockerode";
import { KILL_AFTER_STEP_ENV } from "../../agent/actions/switchover/switchover-machine.js";
import { CommandResultSchema, CommandStatus } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { SwitchoverOutcome, SwitchoverRecordSchema } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { cleanupContainers, execFileP, testEngine, waitFor } from "../harness/engine.js";
import { getOnce } from "../harness/http-load.js";
import { prepareTestShadow, removeSnapshots, startService } from "../harness/switchover-services.js";

const HOST = new URL("../harness/switchover-host.js", import.meta.url).pathname;
let docker: Docker;
let app: string;
const originals: string[] = [];
const dirs: string[] = [];
let n = 0;

before(async () => {
  ({ docker, app } = await testEngine());
});

after(async () => {
  await cleanupContainers(docker);
  await removeSnapshots(docker, originals);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Host {
  child: ChildProcess;
  lines: AsyncIterator<string>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function host(env: Record<string, string>): Host {
  const child = spawn(process.execPath, [HOST], { env: { ...process.env, SL_HOST_OWNER: String(process.pid), ...env }, stdio: ["ignore", "pipe", "inherit"] });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once("exit", (code, signal) => r({ code, signal })));
  return { child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator](), exit };
}

async function line(h: Host): Promise<Record<string, unknown>> {
  const next = await h.lines.next();
  assert.ok(!next.done, "the host printed a line");
  return JSON.parse(next.value) as Record<string, unknown>;
}

const SHARED = ["snapshot", "start-shadow", "health-gate", "redirect", "drain", "stop-original", "commit"];
const EXCLUSIVE = ["hold", "stop-original", "start-shadow", "health-gate", "redirect"];

describe("switchover crash recovery", { concurrency: false }, () => {
  for (const [mode, steps] of [
    ["shared", SHARED],
    ["exclusive", EXCLUSIVE],
  ] as const) {
    const order = mode === "shared" ? SHARED : ["snapshot", "hold", "drain", "stop-original", "start-shadow", "health-gate", "redirect", "commit"];
    for (const step of steps) {
      test(`${mode}: killed after ${step}, restarted: one container serves and the record says ${order.indexOf(step) >= order.indexOf("redirect") ? "forward" : "rolled back"}`, async () => {
        const dir = await mkdtemp(join(tmpdir(), "sl-crash-"));
        dirs.push(dir);
        const svc = await startService(docker, app, { name: `sl-crash-${process.pid}-${++n}` });
        originals.push(svc.container.Id);
        const shadowId = await prepareTestShadow(docker, svc.container, app);
        const command = `crash-${process.pid}-${n}`;
        const first = host({ SL_HOST_DIR: dir, SL_HOST_SWITCH: svc.container.Id, SL_HOST_MODE: mode, SL_HOST_COMMAND: command, [KILL_AFTER_STEP_ENV]: step });
        await line(first);
        const died = await first.exit;
        assert.equal(died.signal, "SIGKILL", `the host killed itself after ${step}`);

        const second = host({ SL_HOST_DIR: dir, SL_HOST_COMMAND: command });
        try {
          const ready = await line(second);
          const recs = (ready["ready"] as JsonValue[]).map((r) => fromJson(SwitchoverRecordSchema, r));
          const rec = recs.find((r) => r.id === command);
          assert.ok(rec, "the switchover's record survived");
          const forward = order.indexOf(step) >= order.indexOf("redirect");
          const running = await Promise.all([svc.container.Id, shadowId].map(async (id) => (await docker.getContainer(id).inspect()).State.Running));
          assert.equal(running.filter(Boolean).length, 1, `exactly one container runs: original ${running[0]}, shadow ${running[1]}`);
          const served = await waitFor("the service through the restarted proxy", async () => {
            const r = await getOnce("127.0.0.1", svc.listenPort, "/", 2000);
            return r.ok ? r.body : undefined;
          });
          if (forward) {
            assert.ok(rec.outcome === SwitchoverOutcome.OBSERVING || rec.outcome === SwitchoverOutcome.SUCCEEDED, SwitchoverOutcome[rec.outcome]);
            assert.match(rec.recovery, /^completed forward/);
            assert.equal(running[1], true, "the shadow serves");
            assert.equal(served, String(svc.shadowPort));
            assert.ok(rec.steps.some((s) => s.name === "commit" && s.state === "done"), "the forward path was completed");
          } else {
            assert.equal(rec.outcome, SwitchoverOutcome.ROLLED_BACK, `${SwitchoverOutcome[rec.outcome]}: ${rec.error} ${(await execFileP("ss", ["-ltnp"])).stdout.split("\n").filter((l) => l.includes(String(svc.listenPort))).join(" | ")}`);
            assert.match(rec.recovery, /^rolled back/);
            assert.equal(running[0], true, "the original serves");
            assert.equal(served, String(svc.port));
          }
          assert.match(rec.recovery, new RegExp(`last step done: ${step}\\)`));
          const journal = ready["journal"] as { state: string; result: JsonValue } | undefined;
          assert.equal(journal?.state, "finished", "the journal's entry was finished by recovery");
          const result = fromJson(CommandResultSchema, journal.result);
          assert.equal(result.status, forward ? CommandStatus.OK : CommandStatus.FAILED);
          assert.equal(result.switchover?.id, command);
        } finally {
          second.child.kill("SIGTERM");
          await second.exit;
        }
      });
    }
  }
});
