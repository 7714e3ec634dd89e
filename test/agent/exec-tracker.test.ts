/**
 * Exec events are attributed only to a container that existed when the exec happened. The kernel
 * gives a freed mount namespace's inode number to the next one, so an event held back (its
 * namespace not known yet) or read late can carry the number of a container started after it.
 * And an event is attributed by its process's exe link only while that process still runs the
 * program the event loaded.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { bootMinusMonotonic } from "../../agent/telemetry/boot-clock.js";
import type { ExecEvent } from "../../agent/telemetry/exec-ebpf.js";
import { ExecTracker, type ExecSighting } from "../../agent/telemetry/exec-tracker.js";
import { silentLogger } from "../../common/log.js";
import { parseStat } from "../../agent/runtime/proc-files.js";
import { cleanupContainers, execFileP, runContainer, testEngine, type TestEngine } from "../harness/engine.js";

describe("exec events and the containers' lifetimes (real engine)", () => {
  let eng: TestEngine;

  before(async () => {
    eng = await testEngine();
  });
  after(async () => cleanupContainers(eng.docker));

  it("an exec before a container started is not recorded against it; one after is", async () => {
    const collector = new LdgCollector({ docker: eng.docker, node: "life-node", procRoot: "/proc", dockerRoot: eng.info.rootDir, log: silentLogger(), metrics: new AgentMetrics() });
    const seen: ExecSighting[] = [];
    const tracker = new ExecTracker({ node: "life-node", procRoot: "/proc", collector, onExec: (s) => seen.push(s), onDetection: () => undefined, holdMs: 60_000 });
    try {
      // The kernel's monotonic clock (bpftrace's nsecs) before the container exists.
      const earlier = process.hrtime.bigint();
      await new Promise((r) => setTimeout(r, 50));
      const c = await runContainer(eng.docker, eng.app, ["/bin/sleep", "600"]);
      const pid = (await c.inspect()).State.Pid;
      const mntns = Number(/\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/ns/mnt`))?.[1] ?? NaN);
      let gone = 4_000_000;
      while (existsSync(`/proc/${gone}`)) gone--;
      const event = (monoNs: bigint): ExecEvent => ({ pid: gone, ppid: pid, filename: "/bin/busybox", mntns, startTimeTicks: 1n, comm: "busybox", at: new Date(), monoNs });

      // Held while its namespace is unknown (the tracker has not seen the container yet) ...
      tracker.onEbpf(event(earlier));
      assert.equal(seen.length, 0);
      // ... and not given to the container once it is known: it happened before the container.
      await collector.refreshOne(c.id);
      tracker.rebuild();
      assert.equal(seen.length, 0, "an exec from before the container started was attributed to it");
      assert.equal(tracker.stats.beforeStart, 1);
      // The same namespace's exec now is the container's.
      tracker.onEbpf(event(process.hrtime.bigint()));
      assert.deepEqual(seen.map((s) => s.container.id), [c.id]);
      assert.equal(tracker.stats.matched, 1);
    } finally {
      tracker.stop();
    }
  });

  it("takes a live process's exe link only while it still runs the exec's program", async () => {
    const collector = new LdgCollector({ docker: eng.docker, node: "life-node", procRoot: "/proc", dockerRoot: eng.info.rootDir, log: silentLogger(), metrics: new AgentMetrics() });
    const seen: ExecSighting[] = [];
    const tracker = new ExecTracker({ node: "life-node", procRoot: "/proc", collector, onExec: (s) => seen.push(s), onDetection: () => undefined });
    const c = await runContainer(eng.docker, eng.app, ["/bin/sleep", "600"]);
    await execFileP("docker", ["exec", c.id, "/bin/cp", "/bin/busybox", "/tmp/dropped"]);
    await collector.refreshOne(c.id);
    tracker.rebuild();
    const pid = (await c.inspect()).State.Pid;
    const mntns = Number(/\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/ns/mnt`))?.[1] ?? NaN);
    const start = parseStat(readFileSync(`/proc/${pid}/stat`, "utf8"))?.startTime ?? 0n;
    const exec = (filename: string, comm: string, startTimeTicks: bigint): string => {
      tracker.onEbpf({ pid, ppid: 0, filename, mntns, startTimeTicks, comm, at: new Date(), monoNs: process.hrtime.bigint() });
      const s = seen.at(-1);
      return `${s?.path} ${s?.attribution.drift ? "drift" : "image"}`;
    };
    // The container's sleep (busybox) as it runs now: its exe link.
    assert.equal(exec("/bin/sleep", "sleep", start), "/bin/busybox image");
    // A dropped binary whose process has exec'd the image's sleep since: the exec'd path, not the link.
    assert.equal(exec("/tmp/dropped", "dropped", start), "/tmp/dropped drift");
    // The pid of another process (a recycled pid): the same.
    assert.equal(exec("/tmp/dropped", "sleep", start + 1n), "/tmp/dropped drift");
  });

  it("converts the monotonic clock to the start times' boot clock to within a tick", () => {
    const b = bootMinusMonotonic();
    assert.ok(b !== undefined);
    assert.ok(b.offsetNs >= 0n, "boot time includes suspends, monotonic time does not");
    // /proc/uptime is the boot clock in hundredths of a second.
    const uptimeNs = BigInt(Math.round(Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]) * 100)) * 10_000_000n;
    const viaOffset = process.hrtime.bigint() + b.offsetNs;
    assert.ok(viaOffset - uptimeNs >= -20_000_000n && viaOffset - uptimeNs <= 20_000_000n, `boot clock ${viaOffset} ns against uptime ${uptimeNs} ns`);
    assert.ok(b.errorNs < 1_000_000n, `error ${b.errorNs} ns: clock_gettime through libc works here`);
  });
});
