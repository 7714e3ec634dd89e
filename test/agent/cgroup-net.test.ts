/**
 * cgroup and network samplers: parsers on files captured from this host kind (Docker 20.10,
 * cgroupfs driver, cgroup v1 plus the unified hierarchy at /sys/fs/cgroup/unified, kernel 6.18,
 * little-endian), hand-made v2 and edge-case trees in temp dirs, then real containers.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path, { dirname } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { scanContainerProcesses } from "../../agent/runtime/container-processes.js";
import {
  CgroupSampler,
  locateCgroups,
  parseCgroupMounts,
  parsePidList,
  type CgroupPaths,
  type CgroupSample,
} from "../../agent/telemetry/cgroup-sampler.js";
import { NetSampler, parseNetDev, parseProcNetTcp } from "../../agent/telemetry/net-sampler.js";
import { testEngine, waitFor } from "../harness/engine.js";

const execFileP = promisify(execFile);

// Compiled to dist/test/agent/cgroup-net.test.js; SHADOWLAYER_REPO_ROOT overrides the guess.
const root = process.env["SHADOWLAYER_REPO_ROOT"] ?? path.resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const fixturePath = (rel: string): string => path.join(root, "test/fixtures", rel);
const fixture = (rel: string): string => readFileSync(fixturePath(rel), "utf8");

/** The container the cgroup fixtures were read from (--memory 64m --cpus 0.5, sh + 2 sleeps). */
const CAPTURED_ID = "a23da158fe6992a5057d0ae739a112d7add5cb8bbb40fb34745a5866fa8ab067";
const CAPTURED_PID = 13404;
const TREE = fixturePath("cgroup/hybrid-tree");
const MiB = 1024 * 1024;

const tmp = mkdtempSync(path.join(tmpdir(), "sl-cgroup-net-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function writeTree(base: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    const p = path.join(base, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, text);
  }
}

/** The host mountinfo fixture with its cgroup mounts moved under `to`. */
function hostMountinfoAt(to: string): string {
  return fixture("cgroup/mountinfo-host-hybrid.txt").replaceAll(" /sys/fs/cgroup", ` ${to}`);
}

/** A fake procRoot holding /proc/<pid>/cgroup. */
function fakeProc(name: string, pid: number, cgroupText: string): string {
  const procRoot = path.join(tmp, name);
  writeTree(procRoot, { [`${pid}/cgroup`]: cgroupText });
  return procRoot;
}

describe("cgroup mounts and paths (captured)", () => {
  it("parses the cgroup lines of the host mountinfo: v1 controllers one per mount, unified as cgroup2", () => {
    const mounts = parseCgroupMounts(fixture("cgroup/mountinfo-host-hybrid.txt"));
    assert.deepEqual(
      mounts.map((m) => `${m.fsType} ${m.mountPoint} ${m.controllers.join(",")} ${m.root}`),
      [
        "cgroup /sys/fs/cgroup/cpu cpu /",
        "cgroup /sys/fs/cgroup/cpuacct cpuacct /",
        "cgroup /sys/fs/cgroup/cpuset cpuset /",
        "cgroup /sys/fs/cgroup/memory memory /",
        "cgroup /sys/fs/cgroup/devices devices /",
        "cgroup /sys/fs/cgroup/freezer freezer /",
        "cgroup /sys/fs/cgroup/blkio blkio /",
        "cgroup /sys/fs/cgroup/pids pids /",
        "cgroup /sys/fs/cgroup/systemd name=systemd /",
        "cgroup2 /sys/fs/cgroup/unified  /",
      ],
    );
  });

  it("places a container's cgroups on the host: v1 dirs per controller and docker/<id> in the unified tree", () => {
    const paths = locateCgroups(fixture("cgroup/pid-cgroup-container.txt"), parseCgroupMounts(fixture("cgroup/mountinfo-host-hybrid.txt")));
    assert.equal(paths.version, "hybrid");
    assert.equal(paths.dirs["cpu"], `/sys/fs/cgroup/cpu/docker/${CAPTURED_ID}`);
    assert.equal(paths.dirs["cpuacct"], `/sys/fs/cgroup/cpuacct/docker/${CAPTURED_ID}`);
    assert.equal(paths.dirs["memory"], `/sys/fs/cgroup/memory/docker/${CAPTURED_ID}`);
    assert.equal(paths.dirs["pids"], `/sys/fs/cgroup/pids/docker/${CAPTURED_ID}`);
    assert.equal(paths.dirs["name=systemd"], `/sys/fs/cgroup/systemd/docker/${CAPTURED_ID}`);
    assert.equal(paths.dirs[""], `/sys/fs/cgroup/unified/docker/${CAPTURED_ID}`);
    assert.deepEqual(paths.missing, {});
  });

  it("inside the container the mounts' root is /docker/<id>, so its own cgroup is the mount point itself", () => {
    const mounts = parseCgroupMounts(fixture("cgroup/mountinfo-container-v1.txt"));
    assert.equal(mounts.length, 9);
    assert.ok(mounts.every((m) => m.root === `/docker/${CAPTURED_ID}` && m.fsType === "cgroup"));
    const paths = locateCgroups(fixture("cgroup/pid-cgroup-container.txt"), mounts);
    assert.equal(paths.version, "v1");
    assert.equal(paths.dirs["cpu"], "/sys/fs/cgroup/cpu");
    assert.equal(paths.dirs["memory"], "/sys/fs/cgroup/memory");
    assert.equal(paths.dirs["name=systemd"], "/sys/fs/cgroup/systemd");
    // Docker mounts no cgroup2 in a v1 container although the kernel prints the 0:: line.
    assert.equal(paths.dirs[""], undefined);
    assert.equal(paths.missing?.[""], "cgroup2 not mounted");
    // A sibling cgroup is not visible through a mount rooted at /docker/<id>.
    const sibling = locateCgroups("4:memory:/docker/other\n", mounts);
    assert.equal(sibling.dirs["memory"], undefined);
    assert.equal(sibling.missing?.["memory"], "memory controller: no mount shows /docker/other");
  });

  it("handles co-mounted controllers and a namespaced root of /../.. lexically", () => {
    const mounts = parseCgroupMounts(
      [
        "31 30 0:28 /../.. /host/cgroup/cpu,cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct,clone_children",
        "40 30 0:37 /../.. /host/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate",
        "41 30 0:38 / /host/cgroup/odd\\040name rw - cgroup cgroup rw,xattr,release_agent=/x,name=odd",
      ].join("\n"),
    );
    assert.deepEqual(mounts[0]?.controllers, ["cpu", "cpuacct"]);
    assert.equal(mounts[2]?.mountPoint, "/host/cgroup/odd name");
    assert.deepEqual(mounts[2]?.controllers, ["name=odd"]);
    const paths = locateCgroups("2:cpu,cpuacct:/../../kubepods/pod1/abc\n0::/../../kubepods/pod1/abc\n", mounts);
    assert.equal(paths.dirs["cpu"], "/host/cgroup/cpu,cpuacct/kubepods/pod1/abc");
    assert.equal(paths.dirs["cpuacct"], "/host/cgroup/cpu,cpuacct/kubepods/pod1/abc");
    assert.equal(paths.dirs[""], "/host/cgroup/unified/kubepods/pod1/abc");
    assert.equal(paths.version, "hybrid");
  });

  it("parsePidList reads cgroup.procs, ignoring blank and trailing lines", () => {
    assert.deepEqual(parsePidList(readFileSync(path.join(TREE, `pids/docker/${CAPTURED_ID}/cgroup.procs`), "utf8")), [13404, 13432, 13433]);
    assert.deepEqual(parsePidList(""), []);
    assert.deepEqual(parsePidList("1\n\n22\n333"), [1, 22, 333]);
  });
});

describe("CgroupSampler on file trees", () => {
  it("samples the captured hybrid tree: v1 controllers win, 64 MiB limit, pids.max 'max' is a flag", () => {
    const procRoot = fakeProc("proc-hybrid", CAPTURED_PID, fixture("cgroup/pid-cgroup-container.txt"));
    const sampler = new CgroupSampler({ procRoot, cgroupRoot: TREE, mountinfoText: hostMountinfoAt(TREE) });
    const paths = sampler.locate(CAPTURED_ID, CAPTURED_PID);
    assert.ok(paths);
    assert.equal(paths.version, "hybrid");
    assert.equal(paths.dirs["memory"], `${TREE}/memory/docker/${CAPTURED_ID}`);
    assert.equal(paths.dirs[""], `${TREE}/unified/docker/${CAPTURED_ID}`);
    // Captured only four controllers: the others' dirs are absent and say so.
    assert.match(paths.missing?.["cpuset"] ?? "", /^cpuset controller: no dir for \/docker\/a23da158/);
    assert.equal(sampler.locate(CAPTURED_ID, CAPTURED_PID), paths, "cached per container id");
    const s = sampler.sample(paths);
    assert.deepEqual(s, {
      cpuUsageNs: 1532421008,
      cpuPeriods: 31,
      cpuThrottledPeriods: 28,
      cpuThrottledNs: 1294359030,
      memoryBytes: 761856,
      memoryWorkingSetBytes: 761856,
      memoryLimitBytes: 64 * MiB,
      memoryUnlimited: false,
      oomEvents: 0,
      oomKills: 0,
      underOom: false,
      pidsCurrent: 3,
      pidsLimit: null,
      pidsUnlimited: true,
      unavailable: {},
    } satisfies CgroupSample);
    const d = (c: string, f: string): string => `${TREE}/${c}/docker/${CAPTURED_ID}/${f}`;
    assert.deepEqual(sampler.files(paths), [
      d("cpuacct", "cpuacct.usage"),
      d("cpu", "cpu.stat"),
      d("memory", "memory.usage_in_bytes"),
      d("memory", "memory.limit_in_bytes"),
      d("memory", "memory.stat"),
      d("memory", "memory.oom_control"),
      d("pids", "pids.current"),
      d("pids", "pids.max"),
    ]);
    assert.equal(sampler.procsFile(paths), d("pids", "cgroup.procs"));
  });

  it("reads v1's 'no limit' (PAGE_COUNTER_MAX pages) as memoryUnlimited, not as a number", () => {
    const dir = path.join(tmp, "v1-unlimited");
    cpSync(path.join(TREE, `memory/docker/${CAPTURED_ID}`), dir, { recursive: true });
    writeFileSync(path.join(dir, "memory.limit_in_bytes"), fixture("cgroup/v1-memory.limit_in_bytes-unlimited.txt"));
    const s = new CgroupSampler().sample({ dirs: { memory: dir }, version: "v1" });
    assert.equal(s.memoryUnlimited, true);
    assert.equal(s.memoryLimitBytes, null);
    assert.equal(s.unavailable["memoryLimitBytes"], undefined);
    assert.equal(s.memoryBytes, 761856);
    // No cpu, cpuacct or pids dir in these paths: their figures are null with a reason, not 0.
    assert.equal(s.cpuUsageNs, null);
    assert.equal(s.unavailable["cpuUsageNs"], "cpuacct controller not mounted");
    assert.equal(s.pidsCurrent, null);
    assert.equal(s.unavailable["pidsCurrent"], "pids controller not mounted");
  });

  it("samples a pure v2 systemd-driver cgroup (docker-<id>.scope) with 'max' limits and memory.events", () => {
    const cg = path.join(tmp, "v2-root");
    const id = "7".repeat(64);
    const scope = `system.slice/docker-${id}.scope`;
    writeTree(cg, {
      [`${scope}/cpu.stat`]:
        "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 500\nnr_throttled 42\nthrottled_usec 789000\nnr_bursts 0\nburst_usec 0\n",
      [`${scope}/memory.current`]: "52428800\n",
      [`${scope}/memory.max`]: "max\n",
      [`${scope}/memory.stat`]: "anon 40000000\nfile 12428800\ninactive_anon 1000\nactive_anon 2000\ninactive_file 10000000\nactive_file 2428800\n",
      [`${scope}/memory.events`]: "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n",
      [`${scope}/pids.current`]: "7\n",
      [`${scope}/pids.max`]: "max\n",
      [`${scope}/cgroup.procs`]: "4242\n4250\n",
    });
    const procRoot = fakeProc("proc-v2", 4242, `0::/${scope}\n`);
    const mountinfoText = `35 24 0:30 / ${cg} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n`;
    const sampler = new CgroupSampler({ procRoot, cgroupRoot: cg, mountinfoText });
    const paths = sampler.locate(id, 4242);
    assert.deepEqual(paths, { dirs: { "": `${cg}/${scope}` }, version: "v2", missing: {} });
    const s = sampler.sample(paths);
    assert.deepEqual(s, {
      cpuUsageNs: 123456000,
      cpuPeriods: 500,
      cpuThrottledPeriods: 42,
      cpuThrottledNs: 789000000,
      memoryBytes: 52428800,
      memoryWorkingSetBytes: 42428800,
      memoryLimitBytes: null,
      memoryUnlimited: true,
      oomEvents: 2,
      oomKills: 1,
      underOom: null,
      pidsCurrent: 7,
      pidsLimit: null,
      pidsUnlimited: true,
      unavailable: { underOom: "cgroup v2 has no under_oom" },
    } satisfies CgroupSample);
    // v2 reads cpu.stat once for usage and throttling.
    assert.deepEqual(
      sampler.files(paths).map((f) => path.basename(f)),
      ["cpu.stat", "memory.current", "memory.max", "memory.stat", "memory.events", "pids.current", "pids.max"],
    );
    assert.deepEqual(parsePidList(readFileSync(sampler.procsFile(paths) ?? "", "utf8")), [4242, 4250]);
  });

  it("v2 cgroup without the cpu, memory and pids controllers enabled: usage only, the rest null with reasons", () => {
    const cg = path.join(tmp, "v2-bare");
    const id = "8".repeat(64);
    writeTree(cg, { [`docker/${id}/cpu.stat`]: "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\n", [`docker/${id}/cgroup.procs`]: "9\n" });
    const s = new CgroupSampler().sample({ dirs: { "": `${cg}/docker/${id}` }, version: "v2" });
    assert.equal(s.cpuUsageNs, 5_000_000);
    assert.equal(s.cpuPeriods, null);
    assert.equal(s.unavailable["cpuThrottledPeriods"], "cpu controller not enabled (cpu.stat has no nr_periods)");
    assert.equal(s.memoryBytes, null);
    assert.equal(s.memoryUnlimited, false);
    assert.equal(s.unavailable["memoryBytes"], "memory.current missing (memory controller not enabled)");
    assert.equal(s.unavailable["memoryLimitBytes"], "memory.max missing (memory controller not enabled)");
    assert.equal(s.oomKills, null);
    assert.equal(s.pidsCurrent, null);
    assert.equal(s.pidsUnlimited, false);
    assert.equal(s.unavailable["pidsCurrent"], "pids.current missing");
  });

  it("v1 tree without the memory controller: memory figures null with 'memory controller not mounted'", () => {
    const cg = path.join(tmp, "v1-nomem");
    for (const c of ["cpu", "cpuacct", "pids"]) cpSync(path.join(TREE, c), path.join(cg, c), { recursive: true });
    const mountinfoText = fixture("cgroup/mountinfo-host-hybrid.txt")
      .split("\n")
      .filter((l) => /\/sys\/fs\/cgroup\/(cpu|cpuacct|pids) /.test(l))
      .join("\n")
      .replaceAll(" /sys/fs/cgroup", ` ${cg}`);
    const procRoot = fakeProc("proc-v1-nomem", CAPTURED_PID, fixture("cgroup/pid-cgroup-container.txt"));
    const sampler = new CgroupSampler({ procRoot, cgroupRoot: cg, mountinfoText });
    const paths = sampler.locate(CAPTURED_ID, CAPTURED_PID);
    assert.ok(paths);
    assert.equal(paths.version, "v1");
    assert.deepEqual(Object.keys(paths.dirs).sort(), ["cpu", "cpuacct", "pids"]);
    const s = sampler.sample(paths);
    assert.equal(s.cpuUsageNs, 1532421008);
    assert.equal(s.cpuThrottledPeriods, 28);
    assert.equal(s.pidsCurrent, 3);
    for (const k of ["memoryBytes", "memoryWorkingSetBytes", "memoryLimitBytes", "oomEvents", "oomKills", "underOom"] as const) {
      assert.equal(s[k], null, k);
      assert.match(s.unavailable[k] ?? "", /^memory controller not mounted \(tried /, k);
    }
    assert.equal(s.memoryUnlimited, false);
    assert.ok(!sampler.files(paths).some((f) => f.includes("memory")));
  });

  it("falls back to cgroupRoot when no mount shows the path (agent in its own cgroup namespace)", () => {
    const cg = path.join(tmp, "v2-fallback");
    const id = "9".repeat(64);
    writeTree(cg, { [`docker/${id}/cpu.stat`]: "usage_usec 77\n", [`docker/${id}/pids.current`]: "1\n", [`docker/${id}/pids.max`]: "100\n" });
    // The agent's own cgroup2 mount shows only its namespace ("/"); the container is outside it.
    const procRoot = fakeProc("proc-fallback", 31337, `0::/../../docker/${id}\n`);
    const mountinfoText = `35 24 0:30 / ${path.join(tmp, "agent-own-cgroup")} rw - cgroup2 cgroup2 rw\n`;
    const sampler = new CgroupSampler({ procRoot, cgroupRoot: cg, mountinfoText });
    const paths = sampler.locate(id, 31337);
    assert.equal(paths?.dirs[""], `${cg}/docker/${id}`);
    const s = sampler.sample(paths);
    assert.equal(s.cpuUsageNs, 77_000);
    assert.equal(s.pidsLimit, 100);
    assert.equal(s.pidsUnlimited, false);
    // Without the fallback (pure function, no exists check) nothing is found.
    assert.match(locateCgroups(`0::/../../docker/${id}\n`, parseCgroupMounts(mountinfoText)).missing?.[""] ?? "", /^cgroup2: no mount shows/);
  });

  it("a removed cgroup samples as all-null with reasons, and a vanished pid locates nothing", () => {
    const s = new CgroupSampler().sample({ dirs: { "": path.join(tmp, "no-such-cgroup") }, version: "v2" });
    assert.equal(s.cpuUsageNs, null);
    assert.equal(s.unavailable["cpuUsageNs"], "cpu.stat missing");
    assert.equal(s.memoryBytes, null);
    assert.equal(s.pidsCurrent, null);
    assert.equal(new CgroupSampler({ procRoot: path.join(tmp, "empty-proc") }).locate("x", 1), undefined);
  });
});

describe("net parsers (captured)", () => {
  it("parseNetDev: a --network none container has only lo; the host has lo, ifb0, ifb1, eth0", () => {
    assert.deepEqual(parseNetDev(fixture("net/container-dev.txt")), [
      { iface: "lo", rxBytes: 45840, rxPackets: 489, txBytes: 45840, txPackets: 489 },
    ]);
    const host = parseNetDev(fixture("net/host-dev.txt"));
    assert.deepEqual(host.map((r) => r.iface), ["lo", "ifb0", "ifb1", "eth0"]);
    assert.deepEqual(host[3], { iface: "eth0", rxBytes: 722429356, rxPackets: 28017, txBytes: 2216434, txPackets: 19039 });
    // Old kernels print no space after the colon.
    const old = "Inter-|   Receive\n face |bytes\n  eth0:1234 5 0 0 0 0 0 0 678 9 0 0 0 0 0 0\n";
    assert.deepEqual(parseNetDev(old), [{ iface: "eth0", rxBytes: 1234, rxPackets: 5, txBytes: 678, txPackets: 9 }]);
  });

  it("parseProcNetTcp decodes IPv4 rows: states, addresses, inodes", () => {
    const rows = parseProcNetTcp(fixture("net/container-tcp.txt"), false);
    assert.equal(rows.length, 28);
    const count = (st: string): number => rows.filter((r) => r.state === st).length;
    assert.deepEqual([count("ESTABLISHED"), count("TIME_WAIT"), count("LISTEN")], [3, 24, 1]);
    assert.deepEqual(rows[0], { state: "LISTEN", local: "127.0.0.1:18080", remote: "0.0.0.0:0", inode: 144905 });
    assert.deepEqual(rows.find((r) => r.inode === 144927), { state: "ESTABLISHED", local: "127.0.0.1:57526", remote: "127.0.0.1:18082", inode: 144927 });
    assert.ok(rows.filter((r) => r.state === "TIME_WAIT").every((r) => r.inode === 0));
    assert.deepEqual(parseProcNetTcp(fixture("net/host-tcp.txt"), false), [{ state: "LISTEN", local: "0.0.0.0:2024", remote: "0.0.0.0:0", inode: 1059 }]);
    assert.deepEqual(parseProcNetTcp(fixture("net/host-tcp6.txt"), true), []);
  });

  it("parseProcNetTcp decodes IPv6 rows: ::, ::1 and IPv4-mapped peers of a dual-stack socket", () => {
    const rows = parseProcNetTcp(fixture("net/container-tcp6.txt"), true);
    assert.equal(rows.length, 29);
    assert.deepEqual(
      rows.filter((r) => r.state === "LISTEN"),
      [
        { state: "LISTEN", local: "[::]:18083", remote: "[::]:0", inode: 144913 },
        { state: "LISTEN", local: "[::1]:18081", remote: "[::]:0", inode: 143344 },
      ],
    );
    assert.deepEqual(rows.find((r) => r.inode === 143347), {
      state: "ESTABLISHED",
      local: "[::ffff:127.0.0.1]:18082",
      remote: "[::ffff:127.0.0.1]:57526",
      inode: 143347,
    });
    assert.equal(rows.find((r) => r.inode === 144926)?.local, "[::1]:34410");
    // Hand-made: 2001:db8::1 and a tie-breaking zero run (the longer run is compressed).
    const hdr = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    const row = (local: string, remote: string, st: string, inode: number): string =>
      `   0: ${local} ${remote} ${st} 00000000:00000000 00:00000000 00000000  1000        0 ${inode} 1 0000000000000000 20 0 0 10 -1\n`;
    const made = parseProcNetTcp(
      hdr + row("B80D0120000000000000000001000000:0050", "00000120010000000000000001000000:D431", "02", 55) + row("000080FE00000000FF0000020300FEFF:1F90", "00000000000000000000000000000000:0000", "0C", 0),
      true,
    );
    assert.deepEqual(made, [
      { state: "SYN_SENT", local: "[2001:db8::1]:80", remote: "[2001:0:0:1::1]:54321", inode: 55 },
      { state: "NEW_SYN_RECV", local: "[fe80::200:ff:fffe:3]:8080", remote: "[::]:0", inode: 0 },
    ]);
  });
});

describe("NetSampler on a fake /proc", () => {
  const HOST_NS = 4026531840;
  const CTR_NS = 4026532180;
  let procRoot = "";

  before(() => {
    procRoot = path.join(tmp, "netproc");
    const netDir = (pid: number, kind: "host" | "container", tables: string[]): void => {
      for (const t of tables) writeTree(procRoot, { [`${pid}/net/${t}`]: fixture(`net/${kind}-${t}.txt`) });
    };
    const ns = (pid: number, inode: number): void => {
      mkdirSync(path.join(procRoot, `${pid}/ns`), { recursive: true });
      symlinkSync(`net:[${inode}]`, path.join(procRoot, `${pid}/ns/net`));
    };
    ns(1, HOST_NS);
    netDir(1, "host", ["dev", "tcp", "tcp6"]);
    ns(500, CTR_NS);
    netDir(500, "container", ["dev", "tcp", "tcp6"]);
    ns(501, HOST_NS); // a host-network container
    netDir(501, "host", ["dev", "tcp", "tcp6"]);
    ns(502, 4026532999); // a kernel without IPv6
    netDir(502, "container", ["dev", "tcp"]);
  });

  it("sums interfaces, counts TCP states over tcp and tcp6, and keeps owned sockets, listening ones included", () => {
    const net = new NetSampler({ procRoot });
    const s = net.sample(500, 1);
    assert.ok(s);
    assert.equal(s.netns, CTR_NS);
    assert.equal(s.shared, false);
    assert.deepEqual([s.rxBytes, s.rxPackets, s.txBytes, s.txPackets], [45840, 489, 45840, 489]);
    assert.deepEqual([s.extRxBytes, s.extRxPackets, s.extTxBytes, s.extTxPackets], [0, 0, 0, 0]);
    assert.deepEqual(s.tcpByState, {
      ESTABLISHED: 6, SYN_SENT: 0, SYN_RECV: 0, FIN_WAIT1: 0, FIN_WAIT2: 0, TIME_WAIT: 48, CLOSE: 0,
      CLOSE_WAIT: 0, LAST_ACK: 0, LISTEN: 3, CLOSING: 0, NEW_SYN_RECV: 0,
    });
    assert.deepEqual([...s.tcpSockets.keys()].sort(), [143344, 143345, 143347, 144905, 144906, 144913, 144926, 144927, 144928]);
    assert.deepEqual(s.tcpSockets.get(144927), { state: "ESTABLISHED", local: "127.0.0.1:57526", remote: "127.0.0.1:18082" });
    assert.deepEqual(s.tcpSockets.get(144905), { state: "LISTEN", local: "127.0.0.1:18080", remote: "0.0.0.0:0" });
    assert.deepEqual(s.unavailable, {});
    assert.deepEqual(net.files(500), [`${procRoot}/500/net/dev`, `${procRoot}/500/net/tcp`, `${procRoot}/500/net/tcp6`]);
  });

  it("host-network pids share one sample per pass, marked shared; a new pass reads again", () => {
    const net = new NetSampler({ procRoot });
    const a = net.sample(501, 7);
    assert.ok(a);
    assert.equal(a.shared, true);
    assert.equal(a.rxBytes, 1986776 + 722429356);
    assert.equal(a.extRxBytes, 722429356);
    assert.equal(a.tcpByState["LISTEN"], 1);
    assert.deepEqual([...a.tcpSockets.keys()], [1059], "the listening socket (owned); TIME_WAIT ones have no owner");
    assert.equal(net.sample(1, 7), a, "same netns, same pass: cached");
    const b = net.sample(1, 8);
    assert.notEqual(b, a);
    assert.deepEqual(b, a);
  });

  it("a missing tcp6 table is reported, not zero-filled silently; a vanished pid gives undefined", () => {
    const net = new NetSampler({ procRoot });
    const s = net.sample(502, 1);
    assert.equal(s?.unavailable["tcp6"], "net/tcp6 missing (IPv6 disabled in this kernel)");
    assert.equal(s?.tcpByState["LISTEN"], 1);
    assert.equal(net.netnsOf(999), undefined);
    assert.equal(net.sample(999, 1), undefined);
  });

  it("finds the host netns through kthreadd (pid 2) when pid 1's ns link is unreadable", () => {
    const alt = path.join(tmp, "netproc-kthreadd");
    mkdirSync(path.join(alt, "2/ns"), { recursive: true });
    symlinkSync(`net:[${HOST_NS}]`, path.join(alt, "2/ns/net"));
    mkdirSync(path.join(alt, "600/ns"), { recursive: true });
    symlinkSync(`net:[${HOST_NS}]`, path.join(alt, "600/ns/net"));
    cpSync(path.join(procRoot, "1/net"), path.join(alt, "600/net"), { recursive: true });
    const s = new NetSampler({ procRoot: alt }).sample(600, 1);
    assert.equal(s?.shared, true);
    assert.deepEqual(s?.unavailable, {});
  });
});

describe("on real containers", () => {
  const LABEL = "shadowlayer.test=cgroup-net";
  const PORT = 18080;
  const started: string[] = [];
  let image = "";
  const ctr = { cpu: "", net: "", host: "", gone: "" };
  const pid = { cpu: 0, net: 0, host: 0, gone: 0 };

  async function run(args: string[]): Promise<string> {
    const { stdout } = await execFileP("docker", ["run", "-d", "--label", LABEL, ...args]);
    const id = stdout.trim();
    started.push(id);
    return id;
  }
  async function pidOf(id: string): Promise<number> {
    const { stdout } = await execFileP("docker", ["inspect", "-f", "{{.State.Pid}}", id]);
    return Number(stdout.trim());
  }

  before(async () => {
    image = (await testEngine()).base;
    [ctr.cpu, ctr.net, ctr.host, ctr.gone] = await Promise.all([
      run(["--network", "none", "--memory", "64m", "--cpus", "0.5", image, "sh", "-c", "sleep 1000 & sleep 1000 & while :; do :; done"]),
      run([
        "--network", "none", image, "sh", "-c",
        // A listener, one held connection (httpd waits 60 s for its headers) and a request loop.
        `httpd -f -p 127.0.0.1:${PORT} -h / & sleep 0.3; sleep 1000 | nc 127.0.0.1 ${PORT} & ` +
          `while :; do wget -q -O /dev/null http://127.0.0.1:${PORT}/ 2>/dev/null; sleep 0.1; done`,
      ]),
      run(["--network", "host", image, "sleep", "1000"]),
      run(["--network", "none", image, "sleep", "1000"]),
    ]);
    [pid.cpu, pid.net, pid.host, pid.gone] = await Promise.all([pidOf(ctr.cpu), pidOf(ctr.net), pidOf(ctr.host), pidOf(ctr.gone)]);
    // The cpu container has all three processes and the net container its connection, or the
    // tests below would fail for a reason that is not theirs.
    await waitFor(
      "the cpu container's three processes and the net container's connection",
      () => {
        const procs = scanContainerProcesses("/proc", new Set([ctr.cpu])).get(ctr.cpu)?.length ?? 0;
        const tcp = parseProcNetTcp(readFileSync(`/proc/${pid.net}/net/tcp`, "latin1"), false);
        return procs === 3 && tcp.some((r) => r.state === "ESTABLISHED");
      },
      5000,
      100,
    );
  });

  after(async () => {
    if (started.length > 0) await execFileP("docker", ["rm", "-f", ...started]).catch(() => undefined);
  });

  it("cgroup: CPU grows and is throttled at --cpus 0.5, limit is 64 MiB, pids match the processes", async () => {
    const sampler = new CgroupSampler();
    const paths = sampler.locate(ctr.cpu, pid.cpu);
    assert.ok(paths);
    for (const dir of Object.values(paths.dirs)) assert.ok(existsSync(dir), dir);
    assert.ok(paths.dirs["memory"] !== undefined || paths.dirs[""] !== undefined);
    if (existsSync("/sys/fs/cgroup/unified/cgroup.controllers") && existsSync("/sys/fs/cgroup/memory")) {
      // This host kind: v1 controllers plus docker/<id> in the unified hierarchy.
      assert.equal(paths.version, "hybrid");
      assert.equal(paths.dirs[""], `/sys/fs/cgroup/unified/docker/${ctr.cpu}`);
    }
    const s1 = sampler.sample(paths);
    await sleep(1200);
    const s2 = sampler.sample(paths);
    assert.deepEqual(s2.unavailable, {});
    assert.ok(s1.cpuUsageNs !== null && s2.cpuUsageNs !== null);
    const used = s2.cpuUsageNs - s1.cpuUsageNs;
    // Half a CPU over 1.2 s is 0.6 s; the quota keeps it well under a whole CPU.
    assert.ok(used > 0.2e9 && used < 0.9e9, `cpu used ${used} ns`);
    assert.ok((s2.cpuPeriods ?? 0) > 0);
    assert.ok((s2.cpuThrottledPeriods ?? 0) > 0, "throttled at --cpus 0.5");
    assert.ok((s2.cpuThrottledNs ?? 0) > 0);
    assert.equal(s2.memoryLimitBytes, 64 * MiB);
    assert.equal(s2.memoryUnlimited, false);
    assert.ok(s2.memoryBytes !== null && s2.memoryBytes > 0 && s2.memoryBytes < 64 * MiB);
    assert.ok(s2.memoryWorkingSetBytes !== null && s2.memoryWorkingSetBytes <= s2.memoryBytes);
    assert.equal(s2.oomKills, 0);
    assert.equal(s2.pidsCurrent, 3);
    assert.equal(s2.pidsUnlimited, true);
    const procsFile = sampler.procsFile(paths);
    assert.ok(procsFile);
    const listed = parsePidList(readFileSync(procsFile, "utf8"));
    const scanned = scanContainerProcesses("/proc", new Set([ctr.cpu])).get(ctr.cpu) ?? [];
    assert.deepEqual([...listed].sort(), scanned.map((p) => p.pid).sort());
    assert.ok(listed.includes(pid.cpu));
    for (const f of sampler.files(paths)) assert.ok(readFileSync(f, "utf8").length > 0, f);
  });

  it("cgroup: a removed container samples as nulls with reasons and its pid no longer locates", async () => {
    const sampler = new CgroupSampler();
    const paths = sampler.locate(ctr.gone, pid.gone) as CgroupPaths;
    assert.equal(sampler.sample(paths).pidsCurrent, 1);
    await execFileP("docker", ["rm", "-f", ctr.gone]);
    const s = sampler.sample(paths);
    assert.equal(s.cpuUsageNs, null);
    assert.equal(s.memoryBytes, null);
    assert.equal(s.pidsCurrent, null);
    assert.ok(s.unavailable["cpuUsageNs"] !== undefined && s.unavailable["pidsCurrent"] !== undefined);
    sampler.forget(ctr.gone);
    assert.equal(sampler.locate(ctr.gone, pid.gone), undefined);
  });

  it("net: a --network none netns is its own, lo grows, LISTEN 1, and its sockets are not in the host's tables", async () => {
    const net = new NetSampler();
    const a = net.sample(pid.net, 1);
    assert.ok(a);
    assert.equal(a.shared, false);
    assert.notEqual(a.netns, net.netnsOf(process.pid));
    assert.equal(a.tcpByState["LISTEN"], 1);
    assert.ok((a.tcpByState["ESTABLISHED"] ?? 0) >= 2);
    // The held connection: the client end belongs to nc, found through /proc/<pid>/fd.
    const client = [...a.tcpSockets].find(([, v]) => v.state === "ESTABLISHED" && v.remote === `127.0.0.1:${PORT}` && v.local !== `127.0.0.1:${PORT}`);
    assert.ok(client, "nc's connection is listed");
    const procs = scanContainerProcesses("/proc", new Set([ctr.net])).get(ctr.net) ?? [];
    const owner = procs.find((p) => {
      try {
        return readdirSync(`/proc/${p.pid}/fd`).some((fd) => readlinkSync(`/proc/${p.pid}/fd/${fd}`) === `socket:[${client[0]}]`);
      } catch {
        return false;
      }
    });
    assert.equal(owner?.comm, "nc");

    await sleep(1000);
    const b = net.sample(pid.net, 2);
    assert.ok(b);
    assert.ok(b.rxBytes > a.rxBytes && b.txBytes > a.txBytes, `lo grew: ${a.rxBytes} -> ${b.rxBytes}`);
    assert.equal(b.extRxBytes + b.extTxBytes, 0, "only lo in a --network none netns");

    const host = net.sample(process.pid, 2);
    assert.ok(host);
    assert.equal(host.shared, true);
    for (const inode of b.tcpSockets.keys()) assert.equal(host.tcpSockets.has(inode), false);
    const listenInode = parseProcNetTcp(readFileSync(`/proc/${pid.net}/net/tcp`, "latin1"), false).find((r) => r.state === "LISTEN")?.inode;
    assert.ok(listenInode !== undefined && listenInode > 0);
    assert.ok(!parseProcNetTcp(readFileSync("/proc/self/net/tcp", "latin1"), false).some((r) => r.inode === listenInode));
  });

  it("net: a --network host container is shared and reuses the host sample of the pass", () => {
    const net = new NetSampler();
    const host = net.sample(process.pid, 5);
    const c = net.sample(pid.host, 5);
    assert.ok(c);
    assert.equal(c.shared, true);
    assert.equal(c, host);
    assert.equal(net.netnsOf(pid.host), net.netnsOf(process.pid));
  });

  it("a pid that vanished gives undefined, without throwing", async () => {
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    const gone = child.pid;
    assert.ok(gone !== undefined);
    child.kill("SIGKILL");
    await once(child, "exit");
    const net = new NetSampler();
    assert.equal(net.netnsOf(gone), undefined);
    assert.equal(net.sample(gone, 1), undefined);
    assert.equal(new CgroupSampler().locate("gone", gone), undefined);
  });
});
