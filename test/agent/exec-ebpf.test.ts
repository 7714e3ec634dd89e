/**
 * The bpftrace exec source: the parser on lines captured from bpftrace v0.17 on kernel 6.18 (under
 * test/fixtures/bpftrace/), the availability checks, and the source itself against the real kernel.
 * The live tests need root, bpftrace and tracefs; where they are missing they fail with the reason,
 * unless SHADOWLAYER_EBPF=off says eBPF is knowingly absent.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path, { dirname } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { parseStat, readProcFile } from "../../agent/runtime/proc-files.js";
import {
  BpfExecSource,
  ebpfUnavailableReason,
  execProgram,
  FILENAME_MAX_BYTES,
  parseBpftraceLine,
  type BpftraceLine,
  type ExecEvent,
  type ForkEvent,
  type ProcessExitEvent,
} from "../../agent/telemetry/exec-ebpf.js";
import { Code, ShadowError } from "../../common/errors.js";
import { silentLogger } from "../../common/log.js";

// Compiled to dist/test/agent/exec-ebpf.test.js; SHADOWLAYER_REPO_ROOT overrides the guess.
const here = dirname(fileURLToPath(import.meta.url));
const root = process.env["SHADOWLAYER_REPO_ROOT"] ?? path.resolve(here, "../../..");
const fixtureLines = (name: string): string[] => {
  const text = readFileSync(path.join(root, "test/fixtures/bpftrace", name), "utf8");
  return text.endsWith("\n") ? text.slice(0, -1).split("\n") : text.split("\n");
};
const msToWall = (ns: bigint): Date => new Date(Number(ns / 1_000_000n));

function execs(lines: string[]): ExecEvent[] {
  return lines.map((l) => parseBpftraceLine(l, msToWall)).flatMap((p) => (p.kind === "exec" ? [p.event] : []));
}

function only(events: ExecEvent[], pred: (e: ExecEvent) => boolean): ExecEvent {
  const hits = events.filter(pred);
  assert.equal(hits.length, 1, `expected one matching event, got ${hits.length}`);
  return hits[0] as ExecEvent;
}

// What test/fixtures/bpftrace/exec-capture.jsonl saw: bpftrace -f json with execProgram(),
// BPFTRACE_STRLEN=200, while a shell (pid 13929) ran the commands below from /tmp/cap/w.
const CAP = {
  shell: 13929,
  hostMntNs: 4026531832,
  /** sh -c 'echo $$; exec /bin/true' */
  shExecTrue: 13960,
  /** unshare -m /bin/sh -c '...; exec /bin/true', and what readlink /proc/self/ns/mnt printed inside */
  unshare: 13961,
  unshareMntNs: 4026532176,
  /** /bin/sleep 1 and its /proc/<pid>/stat, read while it ran */
  sleep: 13963,
  sleepStat:
    "13963 (sleep) S 13929 13905 9408 0 -1 4194304 95 0 0 0 0 0 0 0 20 0 1 0 234329 2990080 445 18446744073709551615 " +
    "94225131388928 94225131406857 140723649170864 0 0 0 0 6 0 1 0 0 17 1 0 0 0 0 0 94225131420944 94225131422208 " +
    "94225643515904 140723649174050 140723649174063 140723649174063 140723649175533 0",
  longPath: `/tmp/cap/w/${"a".repeat(60)}/${"b".repeat(60)}/${"c".repeat(60)}/${"d".repeat(40)}/long-name-true`,
};

describe("parseBpftraceLine on captured bpftrace 0.17 output", () => {
  const lines = fixtureLines("exec-capture.jsonl");
  const parsed = lines.map((l) => parseBpftraceLine(l, msToWall));
  const events = execs(lines);

  it("reads every line: one attach, an exec per printf, the blank lines bpftrace prints on exit ignored", () => {
    const kinds = parsed.map((p) => p.kind);
    assert.deepEqual(parsed[0], { kind: "attached", probes: 1 });
    assert.equal(kinds.filter((k) => k === "exec").length, lines.filter((l) => l.includes('"printf"')).length);
    assert.equal(kinds.filter((k) => k === "ignored").length, 2);
    assert.equal(kinds.filter((k) => k === "malformed").length, 0);
  });

  it("gives pid, ppid, mntns, start ticks, comm, filename and time (wall and monotonic) of a plain exec", () => {
    const line = lines.find((l) => l.startsWith('{"type": "printf", "data": "13950 '));
    assert.ok(line);
    const e = only(events, (x) => x.pid === 13950);
    assert.deepEqual(e, {
      pid: 13950,
      ppid: CAP.shell,
      filename: "/bin/true",
      mntns: CAP.hostMntNs,
      startTimeTicks: 234325n,
      comm: "true",
      at: new Date(2343253),
      monoNs: 2343253523657n,
    });
  });

  it("keeps spaces, relative paths, tabs, newlines, quotes and backslashes in comm and filename", () => {
    const byPid = (pid: number): ExecEvent => only(events, (x) => x.pid === pid);
    assert.equal(byPid(13951).filename, "/tmp/cap/w/dir with space/my true");
    assert.equal(byPid(13951).comm, "my true");
    assert.equal(byPid(13952).filename, "./x");
    assert.equal(byPid(13952).comm, "x");
    // The tab in comm is resolved by the basename: "tab\tx" / "/tmp/cap/w/tab\tx".
    assert.equal(byPid(13954).comm, "tab\tx");
    assert.equal(byPid(13954).filename, "/tmp/cap/w/tab\tx");
    assert.equal(byPid(13956).comm, "nl\nx");
    assert.equal(byPid(13956).filename, "/tmp/cap/w/nl\nx");
    assert.equal(byPid(13957).comm, 'q"b\\s');
    assert.equal(byPid(13957).filename, '/tmp/cap/w/q"b\\s');
    // The kernel cuts comm to 15 bytes.
    assert.equal(byPid(13958).comm, "a-very-long-pro");
    assert.equal(byPid(13958).filename, "/tmp/cap/w/a-very-long-program-name");
  });

  it("decodes 0.17's \\uffffffXX byte escapes as UTF-8, and leaves an escaped backslash before 'uffffff' alone", () => {
    const utf8 = only(events, (x) => x.pid === 13955);
    assert.equal(utf8.comm, "héllo-wörld");
    assert.equal(utf8.filename, "/tmp/cap/w/héllo-wörld");
    const literal = only(events, (x) => x.pid === 13959);
    assert.equal(literal.filename, "/tmp/cap/w/back\\uffffffc3");
    assert.equal(literal.comm, "back\\uffffffc3");
  });

  it("flags a filename cut at the 199-byte string limit as truncated, and only that one", () => {
    const long = only(events, (x) => x.pid === 13953);
    assert.equal(Buffer.byteLength(long.filename), FILENAME_MAX_BYTES);
    assert.equal(long.filename, CAP.longPath.slice(0, FILENAME_MAX_BYTES));
    assert.equal(long.filenameTruncated, true);
    assert.equal(long.comm, "long-name-true");
    assert.equal(events.filter((x) => x.filenameTruncated === true).length, 1);
  });

  it("follows a pid through exec after exec, and into a new mount namespace", () => {
    const sh = events.filter((x) => x.pid === CAP.shExecTrue).map((x) => x.filename);
    assert.deepEqual(sh, ["/usr/bin/sh", "/bin/true"]);
    const un = events.filter((x) => x.pid === CAP.unshare).map((x) => [x.filename, x.mntns]);
    assert.deepEqual(un, [
      ["/usr/bin/unshare", CAP.hostMntNs],
      ["/bin/sh", CAP.unshareMntNs],
      ["/bin/true", CAP.unshareMntNs],
    ]);
    assert.equal(only(events, (x) => x.comm === "readlink").ppid, CAP.unshare);
  });

  it("reports the start time in the ticks of /proc/<pid>/stat field 22", () => {
    const sleep = only(events, (x) => x.pid === CAP.sleep);
    assert.equal(sleep.filename, "/bin/sleep");
    assert.equal(sleep.startTimeTicks, parseStat(CAP.sleepStat)?.startTime);
  });

  it("counts lost events from a perf buffer that overflowed (bpftrace stopped, 300 execs)", () => {
    const lost = fixtureLines("lost-events.jsonl").map((l) => parseBpftraceLine(l, msToWall));
    assert.deepEqual(
      lost.filter((p) => p.kind === "lost"),
      [{ kind: "lost", count: 80 }],
    );
    assert.equal(lost.filter((p) => p.kind === "malformed").length, 0);
  });

  it("ignores the other message types bpftrace prints, but not a printf that is not ours", () => {
    const kinds = fixtureLines("other-types.jsonl").map((l) => parseBpftraceLine(l, msToWall));
    const byType = (t: string): BpftraceLine[] => kinds.filter((_, i) => fixtureLines("other-types.jsonl")[i]?.includes(`"type": "${t}"`));
    for (const t of ["time", "map", "hist", "helper_error"]) {
      assert.ok(byType(t).length > 0, t);
      for (const p of byType(t)) assert.deepEqual(p, { kind: "ignored" }, t);
    }
    const foreign = byType("printf");
    assert.equal(foreign.length, 1);
    assert.equal(foreign[0]?.kind, "malformed");
  });

  it("turns each malformed line into a reason, never an exception", () => {
    const expected = [
      /not JSON/,
      /not JSON/,
      /string "type"/,
      /string "type"/,
      /data is not a string/,
      /5 unsigned numbers/,
      /5 unsigned numbers/,
      /5 unsigned numbers/,
      /no tab between comm and filename/,
      /no tab before comm/,
      /newline/,
      /pid 0 out of range/,
      /mntns 0 out of range/,
      /empty filename/,
      /data\.events/,
      /data\.events/,
      /data\.events/,
      /data\.probes/,
    ];
    const lines = fixtureLines("malformed.jsonl");
    assert.equal(lines.length, expected.length);
    lines.forEach((line, i) => {
      const p = parseBpftraceLine(line, msToWall);
      assert.equal(p.kind, "malformed", line);
      assert.match((p as { reason: string }).reason, expected[i] as RegExp, line);
    });
  });
});

describe("parseBpftraceLine: fork and exit lines (bpftrace 0.17 output captured here)", () => {
  const printf = (data: string): string => JSON.stringify({ type: "printf", data });
  // A shell (21901) forked dd (21918), which read and wrote 5 MiB and exited; the host's mntns.
  const fork = '{"type": "printf", "data": "fork 21901 21918 4026531832 61459490412036\\n"}';
  const exit = '{"type": "printf", "data": "exit 21918 21901 4026531832 6145949 61459511661321 11994985 5249856 5242973 40960 0 381 1 1 4\\n"}';

  it("reads a fork: parent tgid, child pid, mount namespace, kernel time", () => {
    assert.deepEqual(parseBpftraceLine(fork, msToWall), { kind: "fork", event: { parent: 21901, child: 21918, mntns: 4026531832, monoNs: 61459490412036n } satisfies ForkEvent });
  });

  it("reads an exit: identity, reaper, CPU ns, I/O, faults and context switches", () => {
    const expected: ProcessExitEvent = {
      pid: 21918, ppid: 21901, mntns: 4026531832, startTimeTicks: 6145949n, monoNs: 61459511661321n,
      cpuNs: 11994985, rchar: 5249856, wchar: 5242973, readBytes: 40960, writeBytes: 0, minflt: 381, majflt: 1, nvcsw: 1, nivcsw: 4,
    };
    assert.deepEqual(parseBpftraceLine(exit, msToWall), { kind: "exit", event: expected });
  });

  it("turns malformed fork and exit lines into reasons, never exceptions", () => {
    const cases: [string, RegExp][] = [
      [printf("fork 1 2 3\n"), /fork line/],
      [printf("fork 1 2 3 4 5\n"), /fork line/],
      [printf("fork 1 2 3 4"), /fork line/],
      [printf("fork -1 2 3 4\n"), /fork line/],
      [printf("fork 0 2 3 4\n"), /pid out of range/],
      [printf("fork 1 99999999 3 4\n"), /pid out of range/],
      [printf("fork 1 2 0 4\n"), /mntns 0/],
      [printf("exit 1 1 1 1 1 1 1 1 1 1 1 1 1\n"), /14 unsigned numbers/],
      [printf("exit 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"), /14 unsigned numbers/],
      [printf("exit 1 1 1 1 1 1 1 1 1 1 1 1 1 x\n"), /14 unsigned numbers/],
      [printf("exit 0 1 1 1 1 1 1 1 1 1 1 1 1 1\n"), /pid 0 out of range/],
      [printf("exit 1 1 0 1 1 1 1 1 1 1 1 1 1 1\n"), /mntns 0/],
      [printf("exit 1 1 1 1 1 18446744073709551615 1 1 1 1 1 1 1 1\n"), /beyond 2\^53/],
      [printf("exit 1 1 1 1 1 1 1 1 1 1 1 1 1 1\nexit 2 1 1 1 1 1 1 1 1 1 1 1 1 1\n"), /14 unsigned numbers/],
      [printf(`fork ${"1".repeat(5000)} 2 3 4\n`), /fork line/],
    ];
    for (const [line, reason] of cases) {
      const p = parseBpftraceLine(line, msToWall);
      assert.equal(p.kind, "malformed", line.slice(0, 120));
      assert.match((p as { reason: string }).reason, reason, line.slice(0, 120));
    }
  });

  it("an exec whose comm and filename imitate fork or exit lines stays an exec, whole", () => {
    const name = "exit 1 1 1 1 1";
    const line = printf(`13950 13929 4026532176 234325 2343253523657\t${name.slice(0, 15)}\t/tmp/${name}\nfork 1 2 3 4\n`);
    const p = parseBpftraceLine(line, msToWall);
    assert.equal(p.kind, "exec");
    assert.equal((p as { event: ExecEvent }).event.filename, `/tmp/${name}\nfork 1 2 3 4`);
    // A line that starts like a fork but is not one is malformed, not an exec.
    assert.equal(parseBpftraceLine(printf("fork\tx\t/bin/x\n"), msToWall).kind, "malformed");
  });
});

describe("execProgram", () => {
  it("filters the host mount namespace in kernel only when asked", () => {
    assert.doesNotMatch(execProgram(), /ns\.inum !=/);
    assert.match(execProgram(4026531832), /\/ curtask->nsproxy->mnt_ns->ns\.inum != 4026531832 \//);
    assert.match(execProgram(4026531832, { readyParent: 42 }), /\/ curtask->nsproxy->mnt_ns->ns\.inum != 4026531832 \|\| curtask->real_parent->tgid == 42 \//);
    assert.doesNotMatch(execProgram(undefined, { readyParent: 42 }), /tgid ==/);
    // Fork and exit probes too, the exit one only for a process's last thread, both off the host.
    const p = execProgram(4026531832);
    assert.match(p, /tracepoint:sched:sched_process_fork\n\/ curtask->nsproxy->mnt_ns->ns\.inum != 4026531832 \//);
    assert.match(p, /tracepoint:sched:sched_process_exit\n\/ curtask->signal->live\.counter == 0 && curtask->nsproxy->mnt_ns->ns\.inum != 4026531832 \//);
    assert.match(execProgram(), /sched_process_exit\n\/ curtask->signal->live\.counter == 0 \//);
    // The totals are printed at the dead task's last context switch.
    assert.match(p, /tracepoint:sched:sched_switch\n\/ curtask->__state == 128 && @exiting\[tid\] != 0 \//);
    assert.throws(() => execProgram(-1), (e: unknown) => e instanceof ShadowError && e.code === Code.InvalidArgument);
    assert.throws(() => execProgram(2 ** 32), (e: unknown) => e instanceof ShadowError && e.code === Code.InvalidArgument);
  });
});

describe("ebpfUnavailableReason", () => {
  let empty: string;
  before(() => {
    empty = mkdtempSync(path.join(tmpdir(), "sl-tracefs-"));
  });
  after(() => rmSync(empty, { recursive: true, force: true }));

  it("names a missing bpftrace and how to install it", () => {
    const r = ebpfUnavailableReason({ bpftrace: "/nonexistent/bpftrace" });
    assert.match(r ?? "", /bpftrace not found or not executable at \/nonexistent\/bpftrace/);
    assert.match(r ?? "", /apt-get install -y bpftrace/);
    const onPath = ebpfUnavailableReason({ bpftrace: "no-such-bpftrace-binary" });
    assert.match(onPath ?? "", /not found on PATH.*apt-get install -y bpftrace/);
  });

  it("names an unmounted tracefs and how to mount it", () => {
    const r = ebpfUnavailableReason({ bpftrace: "/bin/true", tracingRoots: [empty] });
    if (process.geteuid?.() !== 0) return assert.match(r ?? "", /needs root/);
    assert.match(r ?? "", /tracefs is not mounted/);
    assert.match(r ?? "", /mount -t tracefs nodev \/sys\/kernel\/tracing/);
    assert.ok(r?.includes(empty));
  });

  it("names a kernel without BTF", () => {
    const r = ebpfUnavailableReason({ bpftrace: "/bin/true", tracingRoots: ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"], btf: path.join(empty, "vmlinux") });
    if (process.geteuid?.() !== 0) return assert.match(r ?? "", /needs root/);
    if (r?.includes("tracefs is not mounted")) return assert.fail(r);
    assert.match(r ?? "", /no BTF/);
  });
});

// ---- live: the real bpftrace on this kernel ----

const liveReason = ebpfUnavailableReason();
/** The live tests need eBPF; test/harness/docker-host.sh installs bpftrace and mounts tracefs. */
function needsEbpf(_t: TestContext): boolean {
  if (liveReason === undefined) return true;
  assert.fail(`eBPF unavailable on this test host: ${liveReason}`);
}

// The test runs in the host's mount namespace; /proc/1/ns/mnt would say the same but is not
// readable here (pid 1 is not dumpable, even for root).
const hostMntNs = statSync("/proc/self/ns/mnt").ino;

/** Collects a source's events and lets a test wait for the ones it expects. */
class Recorder {
  readonly events: ExecEvent[] = [];
  #waiters: { pred: (e: ExecEvent[]) => boolean; done: () => void }[] = [];
  constructor(source: BpfExecSource) {
    source.on("exec", (e) => {
      this.events.push(e);
      this.#waiters = this.#waiters.filter((w) => (w.pred(this.events) ? (w.done(), false) : true));
    });
  }
  async until(what: string, pred: (e: ExecEvent[]) => boolean, timeoutMs = 5000): Promise<void> {
    if (pred(this.events)) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((done) => this.#waiters.push({ pred, done })),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }
  of(pid: number): ExecEvent[] {
    return this.events.filter((e) => e.pid === pid);
  }
}

/** Live (non-zombie) processes whose parent is `ppid` and whose comm is `comm`. */
function childrenNamed(ppid: number, comm: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const st = parseStat(readProcFile(`/proc/${name}/stat`) ?? "");
    if (st?.ppid === ppid && st.comm === comm && !isGone(Number(name))) out.push(Number(name));
  }
  return out;
}

function isGone(pid: number): boolean {
  const text = readProcFile(`/proc/${pid}/stat`);
  return text === undefined || text.slice(text.lastIndexOf(")") + 2).startsWith("Z");
}

async function waitGone(pid: number, timeoutMs = 3000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!isGone(pid)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

describe("BpfExecSource on the real kernel", () => {
  let source: BpfExecSource | undefined;
  let rec: Recorder;
  let work: string;
  let startupMs = 0;

  before(async () => {
    work = mkdtempSync(path.join(tmpdir(), "sl-ebpf-"));
    if (liveReason !== undefined) return;
    source = new BpfExecSource({ log: silentLogger() });
    rec = new Recorder(source);
    const t0 = performance.now();
    await source.start();
    startupMs = performance.now() - t0;
  });
  after(async () => {
    await source?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("attaches within a few seconds", (t) => {
    if (!needsEbpf(t)) return;
    t.diagnostic(`bpftrace attached in ${startupMs.toFixed(0)} ms`);
    assert.ok(startupMs < 10_000, `${startupMs} ms`);
    assert.equal(source?.kind, "ebpf");
  });

  it("reports 20 execs of /bin/true with pid, ppid, filename, comm, mount namespace and time", async (t) => {
    if (!needsEbpf(t)) return;
    const beforeMs = Date.now();
    const pids: number[] = [];
    for (let i = 0; i < 20; i++) {
      const r = spawnSync("/bin/true");
      assert.equal(r.status, 0);
      pids.push(r.pid);
    }
    const afterMs = Date.now();
    await rec.until("20 /bin/true execs", () => pids.every((p) => rec.of(p).length > 0));
    for (const pid of pids) {
      const [e] = rec.of(pid);
      assert.ok(e);
      assert.equal(e.ppid, process.pid);
      assert.equal(e.filename, "/bin/true");
      assert.equal(e.comm, "true");
      assert.equal(e.mntns, hostMntNs);
      // bpftrace's nsecs and Node's hrtime share CLOCK_MONOTONIC: the mapped time falls inside
      // the loop (with 5 ms for the ms rounding of the offset).
      assert.ok(e.at.getTime() >= beforeMs - 5 && e.at.getTime() <= afterMs + 5, `${e.at.toISOString()} not in [${beforeMs}, ${afterMs}]`);
    }
  });

  it("follows a pid from sh to the program it execs", async (t) => {
    if (!needsEbpf(t)) return;
    const pid = Number(execFileSync("/bin/sh", ["-c", "echo $$; exec /bin/true"], { encoding: "utf8" }).trim());
    await rec.until("sh and /bin/true", () => rec.of(pid).length >= 2);
    assert.deepEqual(
      rec.of(pid).map((e) => [e.filename, e.comm, e.ppid]),
      [
        ["/bin/sh", "sh", process.pid],
        ["/bin/true", "true", process.pid],
      ],
    );
  });

  it("keeps relative filenames and spaces as passed to exec", async (t) => {
    if (!needsEbpf(t)) return;
    const dir = path.join(work, "dir with space");
    mkdirSync(dir);
    copyFileSync("/bin/true", path.join(dir, "my true"));
    chmodSync(path.join(dir, "my true"), 0o755);
    const rel = spawnSync("./my true", { cwd: dir });
    const abs = spawnSync(path.join(dir, "my true"));
    assert.equal(rel.status, 0);
    await rec.until("both", () => rec.of(rel.pid).length > 0 && rec.of(abs.pid).length > 0);
    assert.equal(rec.of(rel.pid)[0]?.filename, "./my true");
    assert.equal(rec.of(abs.pid)[0]?.filename, path.join(dir, "my true"));
    assert.equal(rec.of(abs.pid)[0]?.comm, "my true");
  });

  it("gives the start time that /proc/<pid>/stat shows while the process lives", async (t) => {
    if (!needsEbpf(t)) return;
    const sleep = spawn("/bin/sleep", ["5"], { stdio: "ignore" });
    try {
      const pid = sleep.pid ?? assert.fail("no pid");
      await rec.until("sleep", () => rec.of(pid).length > 0);
      const stat = parseStat(readProcFile(`/proc/${pid}/stat`) ?? "");
      assert.ok(stat, "sleep exited before its stat was read");
      assert.equal(rec.of(pid)[0]?.startTimeTicks, stat.startTime);
      assert.equal(rec.of(pid)[0]?.filename, "/bin/sleep");
    } finally {
      sleep.kill("SIGKILL");
    }
  });

  it("reports a process in a new mount namespace with that namespace", async (t) => {
    if (!needsEbpf(t)) return;
    const out = execFileSync("unshare", ["-m", "/bin/sh", "-c", "echo $$; readlink /proc/self/ns/mnt; exec /bin/true"], { encoding: "utf8" });
    const [pidText, nsText] = out.trim().split("\n");
    const pid = Number(pidText);
    const ns = Number(/^mnt:\[(\d+)\]$/.exec(nsText ?? "")?.[1]);
    assert.ok(ns > 0 && ns !== hostMntNs, out);
    await rec.until("/bin/true in the new namespace", () => rec.of(pid).some((e) => e.filename === "/bin/true"));
    const e = rec.of(pid).find((x) => x.filename === "/bin/true");
    assert.equal(e?.mntns, ns);
    assert.equal(e?.ppid, process.pid);
  });

  it("keeps up with a storm of 2,000 execs without losing any", async (t) => {
    if (!needsEbpf(t) || source === undefined) return;
    const lostBefore = source.counters.lost;
    const t0 = performance.now();
    const sh = spawn("/bin/sh", ["-c", "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done"], { stdio: "ignore" });
    const shPid = sh.pid ?? assert.fail("no pid");
    const [code] = (await once(sh, "exit")) as [number | null];
    assert.equal(code, 0);
    const ranMs = performance.now() - t0;
    const mine = (): number => rec.events.filter((e) => e.ppid === shPid && e.filename === "/bin/true").length;
    await rec.until("2000 storm execs", () => mine() >= 2000, 10_000);
    t.diagnostic(`2000 execs in ${ranMs.toFixed(0)} ms (${((2000 / ranMs) * 1000).toFixed(0)} execs/s), all received`);
    assert.equal(mine(), 2000);
    assert.equal(source.counters.lost, lostBefore);
    assert.equal(source.counters.lost, 0);
    assert.equal(source.counters.malformed, 0);
  });

  it("reports a fork and, at the exit of the last thread, the process's CPU and I/O totals", async (t) => {
    if (!needsEbpf(t) || source === undefined) return;
    const forks: ForkEvent[] = [];
    const exits: ProcessExitEvent[] = [];
    const onFork = (e: ForkEvent): void => void forks.push(e);
    const onExit = (e: ProcessExitEvent): void => void exits.push(e);
    source.on("fork", onFork);
    source.on("processExit", onExit);
    try {
      // The shell forks dd (4 MiB through it), then exits itself.
      const out = execFileSync("/bin/sh", ["-c", "echo $$; dd if=/dev/zero of=/dev/null bs=1M count=4 2>/dev/null & echo $!; wait"], { encoding: "utf8" });
      const [sh, dd] = out.trim().split("\n").map(Number) as [number, number];
      // (Polled: the recorder re-checks only on exec events.)
      for (const end = Date.now() + 15_000; !(exits.some((e) => e.pid === dd) && exits.some((e) => e.pid === sh)); ) {
        if (Date.now() > end) assert.fail(`no exit events for sh ${sh} and dd ${dd} within 15 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const ddExit = exits.find((e) => e.pid === dd);
      assert.ok(ddExit);
      assert.equal(ddExit.ppid, sh);
      assert.ok(ddExit.rchar >= 4 * 2 ** 20 && ddExit.wchar >= 4 * 2 ** 20, `rchar ${ddExit.rchar} wchar ${ddExit.wchar}`);
      assert.ok(ddExit.cpuNs > 0);
      assert.equal(exits.filter((e) => e.pid === dd).length, 1, "one exit per process");
      assert.ok(forks.some((f) => f.parent === sh && f.child === dd), "the fork of dd by the shell");
      // Same identity as the exec event of dd.
      assert.equal(rec.of(dd).at(-1)?.startTimeTicks, ddExit.startTimeTicks);
      // The shell's totals at exit include the reaped dd's I/O (the kernel folds it in).
      assert.ok((exits.find((e) => e.pid === sh)?.rchar ?? 0) >= ddExit.rchar);
    } finally {
      source.off("fork", onFork);
      source.off("processExit", onExit);
    }
  });

  it("stop() ends bpftrace, is idempotent, and emits no exit", async (t) => {
    if (!needsEbpf(t) || source === undefined) return;
    const [bpf] = childrenNamed(process.pid, "bpftrace");
    assert.ok(bpf, "bpftrace is not a child of this process");
    let exited = false;
    source.on("exit", () => {
      exited = true;
    });
    const t0 = performance.now();
    await Promise.all([source.stop(), source.stop()]);
    t.diagnostic(`stop took ${(performance.now() - t0).toFixed(0)} ms`);
    await source.stop();
    assert.ok(await waitGone(bpf), `bpftrace ${bpf} still runs`);
    assert.deepEqual(childrenNamed(process.pid, "bpftrace"), []);
    assert.equal(exited, false);
  });
});

describe("BpfExecSource with the host mount namespace filtered", () => {
  it("drops host execs in kernel and reports the one in a new mount namespace", async (t) => {
    if (!needsEbpf(t)) return;
    const source = new BpfExecSource({ log: silentLogger(), hostMntNs });
    const rec = new Recorder(source);
    await source.start();
    try {
      const hostPids = Array.from({ length: 5 }, () => spawnSync("/bin/true").pid);
      const out = execFileSync("unshare", ["-m", "/bin/sh", "-c", "echo $$; exec /bin/true"], { encoding: "utf8" });
      const pid = Number(out.trim());
      await rec.until("the unshare -m exec", () => rec.of(pid).some((e) => e.filename === "/bin/true"));
      assert.notEqual(rec.of(pid)[0]?.mntns, hostMntNs);
      // unshare itself was exec'd in the host namespace, before it unshared.
      assert.deepEqual(
        rec.of(pid).map((e) => e.filename),
        ["/bin/sh", "/bin/true"],
      );
      for (const p of hostPids) assert.deepEqual(rec.of(p), []);
      assert.deepEqual(
        rec.events.filter((e) => e.mntns === hostMntNs),
        [],
      );
    } finally {
      await source.stop();
    }
  });
});

describe("BpfExecSource failures", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "sl-fakebpf-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const script = (name: string, body: string): string => {
    const file = path.join(dir, name);
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, 0o755);
    return file;
  };
  const failed = (re: RegExp) => (e: unknown) => {
    assert.ok(e instanceof ShadowError, String(e));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.match(e.message, re);
    return true;
  };

  it("rejects start() when bpftrace exits before attaching", async () => {
    const source = new BpfExecSource({ log: silentLogger(), bpftrace: "/bin/false" });
    await assert.rejects(source.start(), failed(/^bpftrace \(\/bin\/false\) exited with code 1 before attaching its probe \(stderr empty\)$/));
    await source.stop();
  });

  it("puts bpftrace's last stderr lines in the error, without the RLIMIT_MEMLOCK noise", async () => {
    const bin = script(
      "bpftrace-broken",
      `echo 'ERROR: Unknown error -1: couldn'"'"'t set RLIMIT_MEMLOCK for bpftrace. If your program is not loading, you can try "ulimit -l 8192" to fix the problem' >&2
echo 'stdin:2:1-40: ERROR: Struct/union of type '"'"'struct task_struct'"'"' does not contain a field named '"'"'nsproxy'"'"'' >&2
exit 1`,
    );
    const source = new BpfExecSource({ log: silentLogger(), bpftrace: bin });
    await assert.rejects(source.start(), (e: unknown) => {
      failed(/exited with code 1 before attaching its probe; stderr: stdin:2:1-40: ERROR: Struct\/union .* named 'nsproxy'$/)(e);
      assert.doesNotMatch((e as Error).message, /RLIMIT/);
      return true;
    });
  });

  it("rejects start() after stop()", async () => {
    const source = new BpfExecSource({ log: silentLogger(), bpftrace: "/bin/false" });
    await source.stop();
    await assert.rejects(source.start(), failed(/stopped before start/));
  });

  it("rejects start() on a missing binary", async () => {
    const source = new BpfExecSource({ log: silentLogger(), bpftrace: path.join(dir, "nope") });
    await assert.rejects(source.start(), failed(/cannot run bpftrace .*ENOENT/));
  });

  it("gives up after startTimeoutMs and kills what it started", async () => {
    const bin = script("bpftrace-hangs", "exec /bin/sleep 30");
    const source = new BpfExecSource({ log: silentLogger(), bpftrace: bin, startTimeoutMs: 1000 });
    const t0 = performance.now();
    const starting = assert.rejects(source.start(), failed(/did not attach its probe within 1000 ms/));
    // The hung "bpftrace", seen while it runs (the script's comm until it execs sleep).
    let hung: number | undefined;
    while (hung === undefined && performance.now() - t0 < 900) {
      hung = [...childrenNamed(process.pid, "sleep"), ...childrenNamed(process.pid, "bpftrace-hangs")][0];
      if (hung === undefined) await new Promise((r) => setTimeout(r, 10));
    }
    await starting;
    assert.ok(performance.now() - t0 < 3000);
    assert.ok(hung !== undefined, "the hung bpftrace was never seen running");
    assert.ok(await waitGone(hung), `sleep ${hung} survived`);
    await source.stop();
  });

  it("emits exit with the reason when bpftrace dies after start", async (t) => {
    if (!needsEbpf(t)) return;
    const source = new BpfExecSource({ log: silentLogger() });
    await source.start();
    const [bpf] = childrenNamed(process.pid, "bpftrace");
    assert.ok(bpf);
    const exit = once(source, "exit") as Promise<[string]>;
    process.kill(bpf, "SIGKILL");
    const [reason] = await exit;
    assert.match(reason, /^bpftrace exited unexpectedly with signal SIGKILL after \d+ exec events/);
    await source.stop();
  });

  it("does not leave bpftrace running when the Node process exits", async (t) => {
    if (!needsEbpf(t)) return;
    const mod = path.resolve(here, "../../agent/telemetry/exec-ebpf.js");
    const log = path.resolve(here, "../../common/log.js");
    const code = `
      import { BpfExecSource } from ${JSON.stringify(mod)};
      import { silentLogger } from ${JSON.stringify(log)};
      const s = new BpfExecSource({ log: silentLogger() });
      await s.start();
      console.log("attached");
      process.stdin.once("data", () => process.exit(0));`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", code], { stdio: ["pipe", "pipe", "inherit"] });
    const [first] = (await once(child.stdout, "data")) as [Buffer];
    assert.equal(first.toString().trim(), "attached");
    const [bpf] = childrenNamed(child.pid ?? -1, "bpftrace");
    assert.ok(bpf, "no bpftrace under the child");
    child.stdin.write("bye\n");
    await once(child, "exit");
    assert.ok(await waitGone(bpf), `bpftrace ${bpf} outlived its parent`);
  });
});
