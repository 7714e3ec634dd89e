/**
 * Paths inside a container resolved inside its root, as openat2's RESOLVE_IN_ROOT does: first on a
 * directory standing for a root next to "host" files it must never reach, then on a real
 * container, through the exec tracker, with symlinks that lead into image layers, into the
 * writable layer, at host paths, and up with "..".
 */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Detection } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { LdgCollector } from "../../agent/layers/ldg-collector.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { resolveInRoot, resolveInRootByWalk } from "../../agent/overlay/resolve-in-root.js";
import type { ExecEvent } from "../../agent/telemetry/exec-ebpf.js";
import { ExecTracker, type ExecSighting } from "../../agent/telemetry/exec-tracker.js";
import { silentLogger } from "../../common/log.js";
import { cleanupContainers, execFileP, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

let tmp: string;
before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), "shadowlayer-inroot-"));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("resolving inside a root (a directory standing for one)", () => {
  it("restarts absolute links at the root, stops '..' there, never reads the host's files, gives up on loops", () => {
    const root = path.join(tmp, "root");
    // `host` is outside the root: a link inside the root that names it must land on the root's copy.
    const host = path.join(tmp, "host");
    const put = (rel: string, body = "x"): void => {
      mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      writeFileSync(path.join(root, rel), body);
    };
    const link = (rel: string, target: string): void => {
      mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      symlinkSync(target, path.join(root, rel));
    };
    put("bin/busybox");
    put(`${host}/tool`);
    mkdirSync(host, { recursive: true });
    symlinkSync("/bin/busybox", path.join(host, "tool"));
    writeFileSync(path.join(host, "host-only"), "the host's");
    link("usr/local/bin/x", "/bin/busybox");
    link("hostdir", host);
    link("usr/local/bin/h", "/hostdir/tool");
    link("usr/local/bin/only", `${host}/host-only`);
    link("usr/local/up", "../../../../../../..");
    link("usr/local/bin/rel", "../up/bin/busybox");
    link("loop/a", "b");
    link("loop/b", "a");

    for (const resolve of [resolveInRoot, resolveInRootByWalk]) {
      const at = (p: string) => resolve(root, p);
      assert.deepEqual(at("/usr/local/bin/x"), { path: "/bin/busybox", exists: true }, resolve.name);
      assert.deepEqual(at("usr/local/bin/x"), { path: "/bin/busybox", exists: true }, "relative to the root");
      assert.deepEqual(at("/usr/local/bin/h"), { path: `${host}/tool`, exists: true }, "the root's file, not the host's link to /bin/busybox");
      assert.deepEqual(at("/usr/local/bin/only"), { path: `${host}/host-only`, exists: false }, "a file only the host has is not there");
      assert.deepEqual(at("/usr/local/up/bin/busybox"), { path: "/bin/busybox", exists: true });
      assert.deepEqual(at("/../../../bin/busybox"), { path: "/bin/busybox", exists: true });
      assert.deepEqual(at("/usr/local/bin/rel"), { path: "/bin/busybox", exists: true });
      assert.equal(at("/loop/a"), undefined, "a loop");
      assert.equal(at("/nothing/x"), undefined, "a missing parent");
      assert.equal(at("/bin/busybox/x"), undefined, "a file as a parent");
      assert.deepEqual(at("/bin/gone"), { path: "/bin/gone", exists: false });
    }
  });
});

describe("exec paths resolved in a real container's root", () => {
  let eng: TestEngine;
  let collector: LdgCollector;
  /** Outside the container; the container gets a directory of the same name. */
  let host: string;
  let layers: string[];

  before(async () => {
    eng = await testEngine();
    collector = new LdgCollector({ docker: eng.docker, node: "inroot-node", procRoot: "/proc", dockerRoot: eng.info.rootDir, log: silentLogger(), metrics: new AgentMetrics() });
    host = path.join(tmp, "hostdir");
    mkdirSync(host);
    // On the host, the same name is a link to the host's busybox, and a file the container lacks.
    symlinkSync("/bin/busybox", path.join(host, "tool"));
    copyFileSync("/bin/busybox", path.join(host, "shadowlayer-host-only"));
    const { stdout } = await execFileP("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", eng.app]);
    layers = JSON.parse(stdout) as string[];
  });
  after(async () => cleanupContainers(eng.docker));

  /** A pid with no process, so the tracker cannot read the exe link and resolves the exec'd path. */
  function goneProcess(): number {
    const max = Number(readFileSync("/proc/sys/kernel/pid_max", "utf8"));
    for (let pid = max - 1; pid > 1; pid--) if (!existsSync(`/proc/${pid}`)) return pid;
    throw new Error("no free pid");
  }

  it("a symlink ending at an image file is that layer's, not drift; one through a host path is not followed on the host", async () => {
    const c = await runContainer(eng.docker, eng.app, ["/bin/sleep", "600"]);
    const script = [
      "set -e",
      "mkdir -p /usr/local/bin",
      "ln -s /bin/busybox /usr/local/bin/x",
      // Through an absolute directory link the writable layer adds.
      "ln -s /opt/app /app",
      "ln -s /app/bin/busybox /usr/local/bin/y",
      // Host paths: the container's own directory of that name holds a dropped copy.
      `mkdir -p ${host}`,
      `cp /bin/busybox ${host}/tool`,
      `ln -s ${host} /hostdir`,
      "ln -s /hostdir/tool /usr/local/bin/h",
      "ln -s /hostdir/shadowlayer-host-only /usr/local/bin/only",
      // Up and out of the root, which stays where it is.
      "ln -s ../../../../../../../opt/app/bin/busybox /usr/local/bin/up",
      "ln -s ../../../../.. /esc",
    ].join("\n");
    await execFileP("docker", ["exec", c.id, "/bin/sh", "-c", script]);
    await collector.refreshOne(c.id);
    const r = await waitFor("the container", () => collector.container(c.id));

    const seen: ExecSighting[] = [];
    const detections: Detection[] = [];
    const tracker = new ExecTracker({ node: "inroot-node", procRoot: "/proc", collector, onExec: (s) => seen.push(s), onDetection: (d) => detections.push(d) });
    tracker.rebuild();
    const mntns = Number(/\[(\d+)\]/.exec(readlinkSync(`/proc/${r.pid}/ns/mnt`))?.[1] ?? NaN);
    assert.ok(Number.isFinite(mntns));
    const pid = goneProcess();
    const exec = (filename: string): ExecSighting => {
      const ev: ExecEvent = { pid, ppid: r.pid, filename, mntns, startTimeTicks: 1n, comm: "x", at: new Date(), monoNs: process.hrtime.bigint() };
      const n = seen.length;
      tracker.onEbpf(ev);
      assert.equal(seen.length, n + 1, `${filename} attributed to the container`);
      return seen[n] as ExecSighting;
    };
    const image = (s: ExecSighting, layer: number, p: string, what: string): void => {
      assert.deepEqual({ ...s.attribution, path: s.path }, { layerId: layers[layer], drift: false, reason: "", path: p }, what);
    };
    const drift = (s: ExecSighting, p: string, what: string): void => {
      assert.deepEqual({ ...s.attribution, path: s.path }, { layerId: `rw:${c.id}`, drift: true, reason: "added", path: p }, what);
    };

    image(exec("/usr/local/bin/x"), 0, "/bin/busybox", "x -> /bin/busybox");
    image(exec("/usr/local/bin/y"), 2, "/opt/app/bin/busybox", "y -> /app/bin/busybox, /app -> /opt/app");
    image(exec("/usr/local/bin/up"), 2, "/opt/app/bin/busybox", "'..' stops at the container's root");
    image(exec("/esc/esc/esc/bin/busybox"), 0, "/bin/busybox", "'..' through a directory link stops there too");
    drift(exec("/usr/local/bin/h"), `${host}/tool`, "the container's dropped copy, not the host's link to its busybox");
    drift(exec("/usr/local/bin/only"), `${host}/shadowlayer-host-only`, "a name only the host has is still a path in the container");
    assert.deepEqual(detections.map((d) => d.path).sort(), [`${host}/shadowlayer-host-only`, `${host}/tool`]);
    assert.equal(tracker.stats.unmatched, 0);
  });
});
