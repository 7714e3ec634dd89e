/**
 * The CLI as a person runs it: `up --data-dir D` in one process, `graph <id> --json --data-dir D`
 * in another with no other flag; a missing engine gets a sentence that says what to do.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { cleanupContainers, execFileP, runContainer, testEngine, waitFor, type TestEngine } from "../harness/engine.js";

const CLI = join(PACKAGE_ROOT, "dist", "cli", "main.js");

async function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; node?: string[] } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileP(process.execPath, [...(opts.node ?? []), CLI, ...args], { timeout: 30_000, env: opts.env ?? process.env });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe("shadowlayer CLI", () => {
  let dir: string;
  let eng: TestEngine;
  let up: ChildProcess;
  let upOut = "";

  before(async () => {
    eng = await testEngine();
    dir = await mkdtemp(join(tmpdir(), "sl-cli-"));
    up = spawn(process.execPath, [CLI, "up", "--data-dir", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--agent-http", "127.0.0.1:0", "--json", "--window", "1", "--sample-ms", "250"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    up.stdout?.on("data", (b: Buffer) => (upOut += b.toString()));
    up.stderr?.on("data", () => undefined);
    await waitFor("endpoint.json", () => existsSync(join(dir, "endpoint.json")), 30_000, 100);
  });

  after(async () => {
    if (up.exitCode === null) up.kill("SIGTERM");
    await cleanupContainers(eng.docker);
    await rm(dir, { recursive: true, force: true });
  });

  it("has --help that lists the commands", async () => {
    const r = await cli(["--help"]);
    assert.equal(r.code, 0);
    for (const cmd of ["up", "graph", "containers", "watch", "top", "detections", "agents", "certs", "demo", "agent", "aggregator"]) assert.match(r.stdout, new RegExp(`\\n  ${cmd}\\b`));
  });

  it("loads neither the agent nor the aggregator for --help and read-only commands", async () => {
    // A module hook logs every module the CLI resolves.
    await writeFile(join(dir, "hooks.mjs"), 'import { appendFileSync } from "node:fs";\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(process.env.SL_MODULE_LOG, r.url + "\\n"); return r; }\n');
    await writeFile(join(dir, "register.mjs"), 'import { register } from "node:module";\nregister("./hooks.mjs", import.meta.url);\n');
    let n = 0;
    const loaded = async (args: string[]) => {
      const log = join(dir, `modules-${n++}.log`);
      await cli(args, { node: ["--import", join(dir, "register.mjs")], env: { ...process.env, SL_MODULE_LOG: log } });
      const mods = (await readFile(log, "utf8")).split("\n");
      assert.ok(mods.some((m) => m.includes("/dist/cli/commands/")), "the hook sees the CLI's modules");
      return mods.filter((m) => /\/dist\/(agent|aggregator)\//.test(m));
    };
    for (const args of [["--help"], ["containers", "--help"], ["containers", "--data-dir", dir], ["graph", "nothing-here", "--data-dir", dir], ["top", "--once", "--data-dir", dir]]) {
      assert.deepEqual(await loaded(args), [], args.join(" "));
    }
    assert.ok((await loaded(["agent", "--sample-ms", "0"])).some((m) => m.includes("/dist/agent/")), "the command that runs the agent loads it");
  });

  it("refuses invalid configuration in one sentence that names the flag or variable", async () => {
    const flag = await cli(["up", "--data-dir", dir, "--sample-ms", "abc"]);
    assert.equal(flag.code, 1);
    assert.equal(flag.stderr, 'shadowlayer: --sample-ms: expected a positive number, got "abc"\n');
    const env = await cli(["aggregator", "--data-dir", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--insecure"], { env: { ...process.env, SHADOWLAYER_LOG_LEVEL: "verbose" } });
    assert.equal(env.code, 1);
    assert.match(env.stderr, /^shadowlayer: SHADOWLAYER_LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent, got "verbose"$/m);
    const client = await cli(["containers", "--aggregator", "localhost"]);
    assert.equal(client.code, 1);
    assert.equal(client.stderr, 'shadowlayer: --aggregator: expected host:port, got "localhost"\n');
  });

  it("follows graph changes until Ctrl-C, then exits 0", async () => {
    const watch = spawn(process.execPath, [CLI, "watch", "--json", "--data-dir", dir], { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    watch.stdout?.on("data", (b: Buffer) => (text += b.toString()));
    await waitFor("snapshot", () => (text.includes('"type":"snapshot_done"') ? true : undefined), 15_000, 100);
    watch.kill("SIGINT");
    await waitFor("watch exit", () => (watch.exitCode !== null ? true : undefined), 10_000, 50);
    assert.equal(watch.exitCode, 0);
  });

  it("prints a running container's LDG as seed-shaped JSON, found through the data dir alone", async () => {
    const c = await runContainer(eng.docker, eng.app, ["/opt/app/bin/busybox", "sleep", "600"], { name: `sl-cli-${process.pid}` });
    const json = await waitFor(
      "graph via CLI",
      async () => {
        const r = await cli(["graph", c.id.slice(0, 12), "--json", "--data-dir", dir]);
        if (r.code !== 0) return undefined;
        const g = JSON.parse(r.stdout) as { container_id: string; state: string; layers: Array<{ layer_id: string; dependencies: string[]; services: string[] }> };
        return g.state === "running" && g.layers.some((l) => l.services.length > 0) ? g : undefined;
      },
      15_000,
      300,
    );
    assert.equal(json.container_id, c.id);
    assert.equal(json.layers.length, 5);
    assert.ok(json.layers.every((l) => typeof l.layer_id === "string" && Array.isArray(l.dependencies)));
    const tree = await cli(["graph", `sl-cli-${process.pid}`, "--data-dir", dir]);
    assert.equal(tree.code, 0);
    assert.match(tree.stdout, /mount check: ok/);
    assert.match(tree.stdout, /pid \d+ busybox \(\/opt\/app\/bin\/busybox\)/);
    const list = await cli(["containers", "--data-dir", dir]);
    assert.match(list.stdout, new RegExp(`${c.id.slice(0, 12)}\\s+sl-cli-${process.pid}`));
    assert.match(upOut, new RegExp(`"container_id":"${c.id}"`), "up shows the change");
  });

  it("shows telemetry for people and machines: top, detections, agents", async () => {
    const name = `sl-cli-drift-${process.pid}`;
    const c = await runContainer(eng.docker, eng.app, ["/bin/sh", "-c", "cp /bin/busybox /tmp/busybox-x && exec /tmp/busybox-x sleep 600"], { name });
    type TopRow = { container_id: string; layers: Array<{ layer_id: string; features: Record<string, number> }> };
    const top = await waitFor(
      "top --once --json",
      async () => {
        const r = await cli(["top", "--once", "--json", "--container", c.id.slice(0, 12), "--data-dir", dir]);
        if (r.code !== 0) return undefined;
        const rows = JSON.parse(r.stdout) as TopRow[];
        return rows.find((w) => w.container_id === c.id && w.layers.some((l) => l.layer_id === `rw:${c.id}`));
      },
      20_000,
      300,
    );
    const rw = top.layers.find((l) => l.layer_id === `rw:${c.id}`);
    assert.ok((rw?.features["process_count"] ?? 0) > 0, "the dropped binary's process is counted on the writable layer");
    assert.ok("cpu_seconds.rate" in (rw?.features ?? {}));

    const table = await cli(["top", "--once", "--data-dir", dir]);
    assert.equal(table.code, 0);
    assert.match(table.stdout, /^CONTAINER\s+LAYER\s+NAME\s+PROCS\s+CPU%\s+RSS/m);
    assert.match(table.stdout, new RegExp(`${name}\\s+rw:`));

    const det = await waitFor("detections --json", async () => {
      const r = await cli(["detections", "--json", "--container", name, "--data-dir", dir]);
      const list = r.code === 0 ? (JSON.parse(r.stdout) as Array<{ path: string; layer_id: string; reason: string }>) : [];
      return list.find((d) => d.path === "/tmp/busybox-x");
    });
    assert.equal(det.layer_id, `rw:${c.id}`);
    assert.equal(det.reason, "added");
    assert.match(upOut, /"event":"detection".*"path":"\/tmp\/busybox-x"/, "up prints the detection");

    const agents = await cli(["agents", "--json", "--data-dir", dir]);
    assert.equal(agents.code, 0);
    const [a] = JSON.parse(agents.stdout) as Array<{ connected: boolean; exec_source: string | null; windows: number; node_context: { memory_total_bytes: number } | null }>;
    assert.equal(a?.connected, true);
    assert.ok((a?.windows ?? 0) > 0);
    assert.ok(a?.exec_source === "ebpf" || a?.exec_source === "proc-poll", `exec source ${a?.exec_source}`);
    assert.ok((a?.node_context?.memory_total_bytes ?? 0) > 0, "node context arrives with the heartbeat");
    const people = await cli(["agents", "--data-dir", dir]);
    assert.match(people.stdout, /^NODE\s+CONNECTED\s+RUNTIME\s+EXEC SOURCE/m);
    assert.match(people.stdout, /^\S+\s+yes\s+docker\s+/m, "the runtime the agent reads");
  });

  it("prints no raw escape sequence from image history, executable paths or argv in graph, detections, top and watch", async () => {
    const esc = "\x1b]0;pwned\x07\x1b[2J";
    const shown = "\\x1b]0;pwned\\x07\\x1b[2J";
    const tag = `sl-cli-esc-${process.pid}`;
    const image = `shadowlayer-test/esc:${process.pid}`;
    const name = `${tag}-run`;
    try {
      // Image history with the sequence: a committed layer's created_by is the command that made
      // it, and that layer holds a busybox whose file name carries the sequence (busybox runs as
      // itself under any name that starts with "busybox").
      const maker = await runContainer(eng.docker, eng.base, ["/bin/sh", "-c", `cp /bin/busybox '/bin/busybox${esc}'`], { name: `${tag}-maker` });
      await maker.wait();
      await maker.commit({ repo: "shadowlayer-test/esc", tag: String(process.pid) });
      // One process from that layer, one dropped into the writable layer (drift), the sequence in argv.
      const c = await runContainer(eng.docker, image, ["/bin/sh", "-c", `cp /bin/busybox '/tmp/busybox${esc}' && ('/tmp/busybox${esc}' sleep 600 &) && exec '/bin/busybox${esc}' sleep 600 # ${esc}`], { name });
      const seen = async (what: string, args: string[], done: (out: string) => boolean) =>
        waitFor(what, async () => {
          const r = await cli([...args, "--data-dir", dir]);
          return r.code === 0 && done(r.stdout) ? r.stdout : undefined;
        }, 20_000, 300);
      const views = {
        // Both processes under their escaped paths (before the exec, the graph shows only `sh`s).
        graph: await seen("graph with both processes", ["graph", name], (o) => o.includes(`(/bin/busybox${shown})`) && o.includes(`(/tmp/busybox${shown})`)),
        detections: await seen("the drift detection", ["detections", "--container", name], (o) => o.includes("added")),
        top: await seen("top with the image layer", ["top", "--once", "--container", c.id.slice(0, 12)], (o) => o.includes("RUN cp")),
        watch: "",
      };
      const watch = spawn(process.execPath, [CLI, "watch", "--data-dir", dir], { stdio: ["ignore", "pipe", "pipe"] });
      watch.stdout?.on("data", (b: Buffer) => (views.watch += b.toString()));
      await waitFor("watch snapshot", () => (views.watch.includes("-- live --") ? true : undefined), 15_000, 100);
      watch.kill("SIGINT");
      await waitFor("watch exit", () => (watch.exitCode !== null ? true : undefined), 10_000, 50);

      const leaking = Object.entries(views).filter(([, text]) => text.includes("\x1b") || text.includes("\x07"));
      assert.deepEqual(leaking.map(([view]) => view), [], `raw ESC or BEL printed:\n${leaking.map(([, t]) => JSON.stringify(t)).join("\n")}`);

      assert.ok(views.graph.includes(`RUN cp /bin/busybox '/bin/busybox${shown}'`), views.graph);
      assert.ok(views.watch.includes(`(/tmp/busybox${shown})`), views.watch);
      assert.ok(views.detections.includes(`/tmp/busybox${shown}`), views.detections);
      const [head = "", row = ""] = views.detections.split("\n");
      assert.equal(row.search(/\S+$/), head.indexOf("SOURCE"), "columns stay aligned after the escaped path");
      // top's NAME is cut at 36 characters, before escaping.
      assert.ok(views.top.includes(`RUN cp /bin/busybox '/bin/busybox\\x1b]0`), views.top);

      const json = JSON.parse((await cli(["graph", name, "--json", "--data-dir", dir])).stdout) as { layers: Array<{ processes: Array<{ exe: string }> }> };
      assert.ok(json.layers.flatMap((l) => l.processes).some((p) => p.exe === `/tmp/busybox${esc}`), "--json keeps the exact strings");
    } finally {
      await Promise.all([name, `${tag}-maker`].map((n) => eng.docker.getContainer(n).remove({ force: true }).catch(() => undefined)));
      await eng.docker.getImage(image).remove({ force: true }).catch(() => undefined);
    }
  });

  it("says clearly when a container is unknown or nothing is running", async () => {
    const r = await cli(["graph", "no-such-container", "--data-dir", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no container no-such-container is known/);
    const empty = await mkdtemp(join(tmpdir(), "sl-cli-empty-"));
    const none = await cli(["graph", "x1234", "--data-dir", empty]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no running shadowlayer found .*`shadowlayer up --data-dir /);
    await rm(empty, { recursive: true, force: true });
  });

  it("explains how to start an engine when the Docker socket is missing", async () => {
    const d = await mkdtemp(join(tmpdir(), "sl-cli-nosock-"));
    const r = await cli(["up", "--data-dir", d, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--agent-http", "127.0.0.1:0", "--docker-socket", join(d, "missing.sock")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the Docker engine at unix:\/\/.*missing\.sock \(ENOENT\)/);
    assert.match(r.stderr, /docker-host\.sh|dockerd --bridge=none/);
    await rm(d, { recursive: true, force: true });
  });

  it("stops cleanly on SIGTERM and removes its endpoint file", async () => {
    const endpoint = JSON.parse(await readFile(join(dir, "endpoint.json"), "utf8")) as { pid: number };
    assert.equal(endpoint.pid, up.pid);
    up.kill("SIGTERM");
    await waitFor("exit", () => (up.exitCode !== null ? true : undefined), 10_000);
    assert.equal(up.exitCode, 0);
    assert.equal(existsSync(join(dir, "endpoint.json")), false);
  });
});
