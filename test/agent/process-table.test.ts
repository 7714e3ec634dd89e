/**
 * The process table on a real container: a process that execs is read again, even when the program
 * it execs has the same command name, so the graph shows its new argv and executable.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { CgroupSampler } from "../../agent/telemetry/cgroup-sampler.js";
import { ProcessTable } from "../../agent/telemetry/process-table.js";
import { silentLogger } from "../../common/log.js";
import type { Process } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { cleanupContainers, execFileP, runContainer, testEngine, waitFor } from "../harness/engine.js";

describe("process table (real engine)", () => {
  after(async () => cleanupContainers((await testEngine()).docker));

  it("re-reads a process's argv after it execs a program of the same name", async () => {
    const eng = await testEngine();
    const table = new ProcessTable("/proc", new CgroupSampler({ procRoot: "/proc" }));
    const collector = new LdgCollector({ docker: eng.docker, node: "table-node", procRoot: "/proc", dockerRoot: eng.info.rootDir, log: silentLogger(), metrics: new AgentMetrics(), processes: table });
    // Paths with a slash make busybox's shell really exec (an applet name alone runs in-process).
    const first = "until [ -e /tmp/go ]; do /bin/sleep 1; done; exec /bin/sh -c '/bin/sleep 600; :' second-image";
    const c = await runContainer(eng.docker, eng.app, ["/bin/sh", "-c", first]);
    const init = async (): Promise<Process | undefined> => {
      await collector.refreshOne(c.id);
      const g = collector.get(c.id);
      return g?.layers.flatMap((l) => l.processes).find((p) => p.pid === g.pid);
    };
    const before = await waitFor("the first image in the graph", async () => ((await init())?.argv[2] === first ? await init() : undefined));
    assert.deepEqual(before.argv, ["/bin/sh", "-c", first]);
    await execFileP("docker", ["exec", c.id, "/bin/touch", "/tmp/go"]);
    const after = await waitFor("the second image's argv", async () => {
      const p = await init();
      return p?.argv.at(-1) === "second-image" ? p : undefined;
    }).catch(async () => assert.fail(`after the exec the graph still shows ${JSON.stringify((await init())?.argv)}`));
    assert.deepEqual(after.argv, ["/bin/sh", "-c", "/bin/sleep 600; :", "second-image"]);
    assert.equal(after.name, before.name, "same command name: only the exec tells them apart");
    assert.equal(after.startTimeTicks, before.startTimeTicks, "the same process");
  });
});
