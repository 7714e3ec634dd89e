/**
 * Unit tests for the agent's pure parsers, on data captured from a real machine (Docker 20.10.24,
 * overlay2, cgroup v1 with the cgroupfs driver, kernel 6.18) and kept under test/fixtures/.
 * Nothing here needs a Docker engine; the fake /proc is built in a temp dir.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path, { dirname } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseStat } from "../../agent/runtime/proc-files.js";
import { containerIdFromCgroup, scanContainerProcesses, type ProcInfo, type ProcScanStats } from "../../agent/runtime/container-processes.js";
import { chainIds } from "../../agent/layers/chain-id.js";
import { layerName } from "../../agent/layers/image-layers.js";
import { overlayRoot, parseMountinfo } from "../../agent/layers/mountinfo.js";
import { parseConfigHistory, parseContainerInspect, parseImageInspect } from "../../agent/runtime/engine-facts.js";
import { Code, ShadowError } from "../../common/errors.js";

// Compiled to dist/test/agent/parsers.test.js; SHADOWLAYER_REPO_ROOT overrides the guess.
const root = process.env["SHADOWLAYER_REPO_ROOT"] ?? path.resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const fixture = (rel: string): string => readFileSync(path.join(root, "test/fixtures", rel), "utf8");
const jsonFixture = (rel: string): unknown => JSON.parse(fixture(rel));

/** The container the /proc fixtures were read from (shadowlayer-demo/app:1, busybox sleep 60). */
const CAPTURED_ID = "9075f5e9b8db7f68ea96592ef8d8a11a597bd4db253bec0e92e7c3caf334b38f";
const OTHER_ID = "5f1c0a7e3b2d4c6e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556a";
const L = "/var/lib/docker/overlay2/l";
const CAPTURED_CACHE = "4d56f46853f94ca91d5a10eef9325c905483caa786551393c900ce0f2652e479";

interface ChainFixture {
  diffIds: string[];
  chainIds: string[];
  cacheIds: string[];
  shortLinks: Record<string, string>;
}
const chainFixture = (): ChainFixture => jsonFixture("engine/chain-ids-app.json") as ChainFixture;

function isInvalidArgument(err: unknown): boolean {
  return err instanceof ShadowError && err.code === Code.InvalidArgument && String(err.code) === "SL_INVALID_ARGUMENT";
}

/** A /proc/<pid>/stat line with 52 fields: field k (k >= 5) is 1000 + k unless set. */
function statLine(pid: number, comm: string, ppid: number, startTime: string): string {
  const f: string[] = [String(pid), `(${comm})`, "S", String(ppid)];
  for (let k = 5; k <= 52; k++) f.push(k === 22 ? startTime : String(1000 + k));
  return `${f.join(" ")}\n`;
}

describe("mountinfo: parseMountinfo and overlayRoot", () => {
  it("parses every line of a real container's mountinfo", () => {
    const text = fixture("proc/mountinfo-overlay.txt");
    const entries = parseMountinfo(text);
    assert.equal(entries.length, text.trim().split("\n").length);
    const first = entries[0];
    assert.equal(first?.mountPoint, "/");
    assert.equal(first.fsType, "overlay");
    assert.equal(first.source, "overlay");
    assert.match(first.superOptions, /^rw,lowerdir=\/var\/lib\/docker\/overlay2\/l\/6WEIT4WVDLJS37PBRPJ4DKFXFY:/);
    assert.match(first.superOptions, /,workdir=\/var\/lib\/docker\/overlay2\/4d56f468[0-9a-f]+\/work$/);
    // An entry with an optional field ("master:2") before the separator and one without.
    const systemd = entries.find((e) => e.mountPoint === "/sys/fs/cgroup/systemd");
    assert.deepEqual(systemd, { mountPoint: "/sys/fs/cgroup/systemd", fsType: "cgroup", source: "cgroup", superOptions: "rw,name=systemd" });
    const resolv = entries.find((e) => e.mountPoint === "/etc/resolv.conf");
    assert.deepEqual(resolv, {
      mountPoint: "/etc/resolv.conf",
      fsType: "ext4",
      source: "/dev/vda",
      superOptions: "rw,discard,resv_strict,resuid=65534,resgid=65534",
    });
    const shm = entries.find((e) => e.mountPoint === "/dev/shm");
    assert.equal(shm?.source, "shm");
    assert.equal(shm?.fsType, "tmpfs");
  });

  it("finds the overlay root of the captured container: lowers top first, upper, work", () => {
    const ov = overlayRoot(parseMountinfo(fixture("proc/mountinfo-overlay.txt")));
    assert.deepEqual(ov, {
      lowerDirs: [
        `${L}/6WEIT4WVDLJS37PBRPJ4DKFXFY`, // the container's -init layer
        `${L}/LMP7MKARXUYRMDFI6BTPADYYGH`, // image top layer
        `${L}/KFBBU5I5MBR3LSVGMWVZFPQ27C`,
        `${L}/BIGUWRKX3NLG7XLWK7KEJ3MRBB`,
        `${L}/WWQ4VCVOP5RAB24AC5X7MIR34R`, // image bottom layer
      ],
      upperDir: `/var/lib/docker/overlay2/${CAPTURED_CACHE}/diff`,
      workDir: `/var/lib/docker/overlay2/${CAPTURED_CACHE}/work`,
    });
  });

  it("agrees with the engine: upper dir as inspect reports it, image lowers top first as layerdb has them", () => {
    const ov = overlayRoot(parseMountinfo(fixture("proc/mountinfo-overlay.txt")));
    assert.ok(ov !== undefined);
    const c = parseContainerInspect(jsonFixture("engine/container-inspect.json"));
    assert.equal(ov.upperDir, c.upperDir);
    assert.equal(ov.lowerDirs.length, c.lowerDirs.length);
    // The engine's l/<short> links name the image layers; mapped to cache ids they must be the
    // image's layers top first, i.e. the layerdb cache ids (bottom first) reversed.
    const fx = chainFixture();
    const imageLowers = ov.lowerDirs.slice(1).map((d) => fx.shortLinks[path.basename(d)]);
    assert.deepEqual(imageLowers, [...fx.cacheIds].reverse());
    const img = parseImageInspect(jsonFixture("engine/image-inspect.json"));
    assert.deepEqual(imageLowers.map((id) => `/var/lib/docker/overlay2/${id ?? "?"}/diff`), img.layerDirs);
  });

  it("reads the lowerdir+ form newer kernels print (captured on 6.18), with \\040 in paths", () => {
    const entries = parseMountinfo(fixture("proc/mountinfo-overlay-lowerdir-plus.txt"));
    assert.deepEqual(
      entries.map((e) => e.mountPoint),
      ["/", "/data dir"],
    );
    assert.deepEqual(overlayRoot(entries), {
      lowerDirs: ["/tmp/sl-ovl/app layer", "/tmp/sl-ovl/base"],
      upperDir: "/tmp/sl-ovl/upper",
      workDir: "/tmp/sl-ovl/work",
    });
  });

  it("keeps lowerdir+ options in the order given, top first", () => {
    const line =
      "900 800 0:99 / / rw,relatime - overlay overlay rw,lowerdir+=/l/top,lowerdir+=/l/mid,lowerdir+=/l/bottom,datadir+=/l/data,upperdir=/u,workdir=/w,uuid=on,metacopy=on";
    assert.deepEqual(overlayRoot(parseMountinfo(line)), {
      lowerDirs: ["/l/top", "/l/mid", "/l/bottom"],
      upperDir: "/u",
      workDir: "/w",
    });
  });

  it("leaves out data-only layers given as datadir+ (captured on this kernel)", () => {
    const line =
      "69 43 0:38 / / rw,relatime - overlay overlay ro,lowerdir+=/tmp/dl/a,lowerdir+=/tmp/dl/b,datadir+=/tmp/dl/data,redirect_dir=on,metacopy=on";
    assert.deepEqual(overlayRoot(parseMountinfo(line)), { lowerDirs: ["/tmp/dl/a", "/tmp/dl/b"], upperDir: "", workDir: "" });
  });

  it(
    "leaves out data-only layers after '::' in the classic form (captured on this kernel)",
    () => {
      const line =
        "69 43 0:38 / / rw,relatime - overlay overlay ro,lowerdir=/tmp/dl/a:/tmp/dl/b::/tmp/dl/data,redirect_dir=on,metacopy=on";
      assert.deepEqual(overlayRoot(parseMountinfo(line))?.lowerDirs, ["/tmp/dl/a", "/tmp/dl/b"]);
    },
  );

  it("unescapes \\040 in mount points and sources (proc(5) example with optional fields)", () => {
    const text = [
      "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
      "37 35 98:0 / /srv/two\\040words\\040here rw shared:5 master:2 propagate_from:1 - fuse.sshfs me@host:/my\\040files rw,user_id=0",
    ].join("\n");
    const entries = parseMountinfo(text);
    assert.equal(entries.length, 2);
    assert.deepEqual(entries[0], { mountPoint: "/mnt/my disk", fsType: "ext3", source: "/dev/root", superOptions: "rw,errors=continue" });
    assert.deepEqual(entries[1], { mountPoint: "/srv/two words here", fsType: "fuse.sshfs", source: "me@host:/my files", superOptions: "rw,user_id=0" });
  });

  it("unescapes a real lowerdir with a space in the classic colon form", () => {
    // Captured on this kernel: mount -o "lowerdir=/tmp/x/l1:/tmp/x/l 3,..."
    const line =
      "1508 26 0:456 / / rw,relatime - overlay overlay rw,lowerdir=/tmp/x/l1:/tmp/x/l\\0403,upperdir=/tmp/x/u2,workdir=/tmp/x/w2,uuid=on";
    assert.deepEqual(overlayRoot(parseMountinfo(line))?.lowerDirs, ["/tmp/x/l1", "/tmp/x/l 3"]);
  });

  it("keeps a backslash-escaped comma inside a classic lowerdir path (captured on this kernel)", () => {
    // mount -o 'lowerdir=/tmp/x/l1:/tmp/x/l\,4,...' is shown by the kernel as l\134\0544.
    const line =
      "1746 26 0:462 / / rw,relatime - overlay overlay rw,lowerdir=/tmp/x/l1:/tmp/x/l\\134\\0544,upperdir=/tmp/x/u3,workdir=/tmp/x/w3,uuid=on";
    assert.deepEqual(overlayRoot(parseMountinfo(line)), { lowerDirs: ["/tmp/x/l1", "/tmp/x/l,4"], upperDir: "/tmp/x/u3", workDir: "/tmp/x/w3" });
  });

  it(
    "keeps a backslash-escaped colon inside a classic lowerdir path (captured on this kernel)",
    () => {
      // mount -o 'lowerdir=/tmp/x/l1:/tmp/x/l\:5,...' is shown by the kernel as l\134:5.
      const line =
        "45 26 0:38 / / rw,relatime - overlay overlay rw,lowerdir=/tmp/x/l1:/tmp/x/l\\134:5,upperdir=/tmp/x/u5,workdir=/tmp/x/w5,uuid=on";
      assert.deepEqual(overlayRoot(parseMountinfo(line))?.lowerDirs, ["/tmp/x/l1", "/tmp/x/l:5"]);
    },
  );

  it("returns undefined when the root is not overlay (real host mountinfo, ext4 root)", () => {
    const entries = parseMountinfo(fixture("proc/mountinfo-host-ext4.txt"));
    const rootEntry = entries.find((e) => e.mountPoint === "/");
    assert.equal(rootEntry?.fsType, "ext4");
    // Overlay mounts elsewhere (a container's merged dir) do not count.
    assert.ok(entries.some((e) => e.fsType === "overlay" && e.mountPoint !== "/"));
    assert.equal(overlayRoot(entries), undefined);
    assert.equal(overlayRoot([]), undefined);
  });

  it("uses the last mount on / (the visible one)", () => {
    const ext4 = "26 1 254:0 / / rw,relatime - ext4 /dev/vda rw";
    const ovl = "76 26 0:38 / / rw,relatime - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w";
    assert.deepEqual(overlayRoot(parseMountinfo(`${ext4}\n${ovl}\n`))?.lowerDirs, ["/a", "/b"]);
    assert.equal(overlayRoot(parseMountinfo(`${ovl}\n${ext4}\n`)), undefined);
  });

  it("skips blank and malformed lines", () => {
    const text = "\n26 1 254:0 / / rw - ext4\nnot a mountinfo line\n21 26 0:20 / /proc rw,relatime - proc proc rw\n";
    assert.deepEqual(parseMountinfo(text), [{ mountPoint: "/proc", fsType: "proc", source: "proc", superOptions: "rw" }]);
  });
});

describe("proc-files: parseStat", () => {
  it("parses a real stat line (busybox sleep in the demo container)", () => {
    assert.deepEqual(parseStat(fixture("proc/stat-busybox.txt")), { comm: "busybox", ppid: 9859, startTime: 98476n });
  });

  it("takes comm up to the last ')' even with spaces and ') (' inside; start time is field 22", () => {
    assert.deepEqual(parseStat(statLine(1234, "a) (b c", 1, "777777")), { comm: "a) (b c", ppid: 1, startTime: 777777n });
    // comm that itself looks like the next fields.
    assert.deepEqual(parseStat(statLine(99, ") S 77 (", 5, "42")), { comm: ") S 77 (", ppid: 5, startTime: 42n });
    assert.deepEqual(parseStat(statLine(7, "", 0, "0")), { comm: "", ppid: 0, startTime: 0n });
  });

  it("keeps start times beyond 2^53 exact", () => {
    assert.equal(parseStat(statLine(1, "init", 0, "18446744073709551615"))?.startTime, 18446744073709551615n);
  });

  it("returns undefined for text without a comm or cut short before field 22", () => {
    assert.equal(parseStat(""), undefined);
    assert.equal(parseStat("1234 no-parens S 1 2 3"), undefined);
    assert.equal(parseStat("1234 (sh) S 1 1234 1234 0 -1 4194560 907 0 2 0 4 0 0 0 20 0 1 0"), undefined);
  });
});

describe("container-processes: containerIdFromCgroup", () => {
  const known = new Set([CAPTURED_ID]);
  const cri = "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f5c8e2a_1b2c_4d5e_8f90_123456789abc.slice";

  it("finds the id in a real cgroup v1 cgroupfs file (/docker/<id>)", () => {
    const text = fixture("proc/cgroup-v1-cgroupfs.txt");
    assert.equal(containerIdFromCgroup(text, known), CAPTURED_ID);
    assert.equal(containerIdFromCgroup(text, undefined), CAPTURED_ID);
    assert.equal(containerIdFromCgroup(text, new Set([OTHER_ID])), undefined);
    assert.equal(containerIdFromCgroup(text, new Set()), undefined);
  });

  it("finds the id in a systemd docker-<id>.scope path (v1 and v2)", () => {
    const v1 = `12:pids:/system.slice/docker-${CAPTURED_ID}.scope\n1:name=systemd:/system.slice/docker-${CAPTURED_ID}.scope\n`;
    const v2 = `0::/system.slice/docker-${CAPTURED_ID}.scope\n`;
    assert.equal(containerIdFromCgroup(v1, known), CAPTURED_ID);
    assert.equal(containerIdFromCgroup(v2, known), CAPTURED_ID);
    assert.equal(containerIdFromCgroup(v2, new Set([OTHER_ID])), undefined);
  });

  it("finds the id in a CRI cri-containerd-<id>.scope path, past the pod uid", () => {
    const text = `${cri}/cri-containerd-${OTHER_ID}.scope\n`;
    assert.equal(containerIdFromCgroup(text, new Set([OTHER_ID])), OTHER_ID);
    assert.equal(containerIdFromCgroup(text, undefined), OTHER_ID);
    assert.equal(containerIdFromCgroup(text, known), undefined);
  });

  it("picks the known id when the path holds several (nested engine)", () => {
    const text = `0::/docker/${OTHER_ID}/docker/${CAPTURED_ID}\n`;
    assert.equal(containerIdFromCgroup(text, known), CAPTURED_ID);
    assert.equal(containerIdFromCgroup(text, new Set([OTHER_ID])), OTHER_ID);
    assert.equal(containerIdFromCgroup(text, undefined), OTHER_ID);
  });

  it("returns undefined for host processes", () => {
    const host = fixture("proc/cgroup-v1-host.txt");
    assert.equal(containerIdFromCgroup(host, known), undefined);
    assert.equal(containerIdFromCgroup(host, undefined), undefined);
    assert.equal(containerIdFromCgroup("0::/user.slice/user-0.slice/session-c1.scope\n", undefined), undefined);
    assert.equal(containerIdFromCgroup("0::/system.slice/containerd.service\n", known), undefined);
    assert.equal(containerIdFromCgroup("", undefined), undefined);
  });
});

describe("container-processes: scanContainerProcesses on a fake /proc", () => {
  let procRoot: string;
  const realCgroup = (): string => fixture("proc/cgroup-v1-cgroupfs.txt");

  function proc(pid: number, files: { cgroup?: string; stat?: string; cmdline?: string; exe?: string }): void {
    const dir = path.join(procRoot, String(pid));
    mkdirSync(dir);
    if (files.cgroup !== undefined) writeFileSync(path.join(dir, "cgroup"), files.cgroup);
    if (files.stat !== undefined) writeFileSync(path.join(dir, "stat"), files.stat);
    if (files.cmdline !== undefined) writeFileSync(path.join(dir, "cmdline"), files.cmdline);
    if (files.exe !== undefined) symlinkSync(files.exe, path.join(dir, "exe"));
  }

  before(() => {
    procRoot = mkdtempSync(path.join(tmpdir(), "sl-parsers-proc-"));
    // Exited between listing and reading: cgroup still there, stat gone.
    proc(4242, { cgroup: realCgroup() });
    // Exited before its cgroup was read.
    proc(4247, {});
    // Complete processes of the captured container.
    proc(4243, {
      cgroup: realCgroup(),
      stat: statLine(4243, "busy box", 4200, "123456"),
      cmdline: "/opt/app/bin/busybox\0sh\0-c\0echo a  b\0\0last\0",
      exe: "/bin/busybox",
    });
    proc(4244, {
      cgroup: realCgroup(),
      stat: statLine(4244, "tool", 4243, "123999"),
      cmdline: "",
      exe: "/opt/app/bin/tool (deleted)",
    });
    // A host process and one of a container that is not known.
    proc(4245, { cgroup: fixture("proc/cgroup-v1-host.txt"), stat: statLine(4245, "sshd", 1, "10"), cmdline: "sshd\0", exe: "/usr/sbin/sshd" });
    proc(4246, { cgroup: `0::/system.slice/docker-${OTHER_ID}.scope\n`, stat: statLine(4246, "nginx", 1, "11"), cmdline: "nginx\0", exe: "/usr/sbin/nginx" });
    // Non-numeric entries are not processes.
    mkdirSync(path.join(procRoot, "sys"));
    writeFileSync(path.join(procRoot, "sys", "cgroup"), realCgroup());
    symlinkSync("4243", path.join(procRoot, "self"));
  });
  after(() => rmSync(procRoot, { recursive: true, force: true }));

  it("returns the known container's processes and counts the vanished ones", () => {
    const stats: ProcScanStats = { pids: 0, vanished: 0 };
    const out = scanContainerProcesses(procRoot, new Set([CAPTURED_ID]), stats);
    assert.deepEqual([...out.keys()], [CAPTURED_ID]);
    const list: ProcInfo[] = [...(out.get(CAPTURED_ID) ?? [])].sort((a, b) => a.pid - b.pid);
    assert.deepEqual(list, [
      {
        pid: 4243,
        comm: "busy box",
        ppid: 4200,
        startTime: 123456n,
        exe: "/bin/busybox",
        exeDeleted: false,
        argv: ["/opt/app/bin/busybox", "sh", "-c", "echo a  b", "", "last"],
      },
      { pid: 4244, comm: "tool", ppid: 4243, startTime: 123999n, exe: "/opt/app/bin/tool", exeDeleted: true, argv: [] },
    ]);
    assert.deepEqual(stats, { pids: 6, vanished: 2 });
  });

  it("finds the other container only when it is known", () => {
    const out = scanContainerProcesses(procRoot, new Set([OTHER_ID, CAPTURED_ID]));
    assert.deepEqual(
      out.get(OTHER_ID)?.map((p) => [p.pid, p.comm, p.exe, p.argv]),
      [[4246, "nginx", "/usr/sbin/nginx", ["nginx"]]],
    );
    assert.equal(scanContainerProcesses(procRoot, new Set()).size, 0);
  });

  it("returns an empty map for a missing proc root", () => {
    const stats: ProcScanStats = { pids: 0, vanished: 0 };
    assert.equal(scanContainerProcesses(path.join(procRoot, "nope"), new Set([CAPTURED_ID]), stats).size, 0);
    assert.deepEqual(stats, { pids: 0, vanished: 0 });
  });
});

describe("chain-id: chainIds", () => {
  it("computes the engine's layerdb chain ids for a real 4-layer image", () => {
    const fx = chainFixture();
    assert.equal(fx.diffIds.length, 4);
    const got = chainIds(fx.diffIds);
    assert.deepEqual(got, fx.chainIds);
    assert.deepEqual(got, [
      "sha256:e4ae850900ce9ff6121d844bd629b62451ff127fda431fda0bfc05e0ab971b87",
      "sha256:9ce411afeac0bddbc72d617f8fbdfbabee02eeab172d3d85a6b1eb0cba492b4a",
      "sha256:02fc2f03dfba85f93e0c17214ebd29903bc1d94f4df6212b2be576cfcf1b3637",
      "sha256:c7c76c45972377fda8f181499794eef9d7aaa6cf559e24f22db92b12e5c03146",
    ]);
  });

  it("chains from the bottom: a prefix of the layers gives a prefix of the ids", () => {
    const fx = chainFixture();
    assert.deepEqual(chainIds([]), []);
    assert.deepEqual(chainIds(fx.diffIds.slice(0, 1)), [fx.diffIds[0]]);
    assert.deepEqual(chainIds(fx.diffIds.slice(0, 2)), fx.chainIds.slice(0, 2));
    // Order matters.
    assert.notEqual(chainIds([...fx.diffIds].reverse())[3], fx.chainIds[3]);
  });
});

describe("image-layers: layerName", () => {
  const digest = "b072bcc5ff7706be7121f103507571a516f6b611f423b1a9b73a192976c120d8";

  it("names legacy-builder steps", () => {
    assert.equal(layerName("/bin/sh -c #(nop)  ENV A=b", "", 0), "ENV A=b");
    assert.equal(layerName("/bin/sh -c apt-get install x", "", 1), "RUN apt-get install x");
    assert.equal(layerName("  /bin/sh -c   apk add\tcurl\n ", "", 1), "RUN apk add curl");
  });

  it("names the real history of shadowlayer-demo/app:1, one name per layer", () => {
    const steps = parseConfigHistory(jsonFixture("engine/image-config-history.json")).filter((s) => !s.emptyLayer);
    assert.equal(steps.length, chainFixture().diffIds.length);
    assert.deepEqual(
      steps.map((s, i) => layerName(s.createdBy, s.comment, i)),
      [
        "Imported from -",
        "RUN mkdir -p /srv/www && echo '<h1>shadowlayer demo</h1>' > /srv/www/index.html",
        "COPY file:b072bcc5ff77 in /opt/app/bin/busybox",
        "RUN echo 'threads=2' > /etc/app.conf && chmod 644 /etc/app.conf",
      ],
    );
  });

  it("shortens 64-hex file and dir digests to 12 hex", () => {
    assert.equal(layerName(`/bin/sh -c #(nop) COPY file:${digest} in /app `, "", 2), "COPY file:b072bcc5ff77 in /app");
    assert.equal(layerName(`/bin/sh -c #(nop) ADD dir:${digest} in /srv`, "", 2), "ADD dir:b072bcc5ff77 in /srv");
    // Not a digest: left alone.
    assert.equal(layerName("/bin/sh -c #(nop) COPY file:b072bcc5 in /app", "", 2), "COPY file:b072bcc5 in /app");
  });

  it("strips the build-arg prefix of a RUN with args", () => {
    const name = layerName("|1 ARG=1 /bin/sh -c make", "", 3);
    assert.ok(name.startsWith("RUN "), name);
    assert.ok(!name.includes("|1") && !name.includes("ARG=1"), name);
    assert.ok(name.endsWith(" make"), name);
    const two = layerName("|2 A=1 B= /bin/sh -c make install", "", 3);
    assert.ok(!two.includes("A=1") && !two.includes("B="), two);
    assert.ok(two.endsWith(" make install"), two);
  });

  it(
    "names a RUN with build args like one without: 'RUN make'",
    () => {
      assert.equal(layerName("|1 ARG=1 /bin/sh -c make", "", 3), "RUN make");
    },
  );

  it(
    "names BuildKit steps ('RUN |1 A=1 /bin/sh -c make', '... # buildkit')",
    () => {
      assert.equal(layerName("RUN |1 ARG=1 /bin/sh -c make", "buildkit.dockerfile.v0", 3), "RUN make");
      assert.equal(layerName("RUN /bin/sh -c make # buildkit", "buildkit.dockerfile.v0", 3), "RUN make");
    },
  );

  it("falls back to the comment, then to 'layer N'", () => {
    assert.equal(layerName("", "Imported from -", 0), "Imported from -");
    assert.equal(layerName("   ", "", 4), "layer 4");
    assert.equal(layerName("", "", 0), "layer 0");
    assert.equal(layerName("/bin/sh -c #(nop) ", "from the nop", 5), "from the nop");
  });

  it("cuts long names at 80 characters", () => {
    const exact = `RUN ${"x".repeat(76)}`;
    assert.equal(layerName(`/bin/sh -c ${"x".repeat(76)}`, "", 0), exact);
    assert.equal(exact.length, 80);
    const long = layerName(`/bin/sh -c ${"y".repeat(200)}`, "", 0);
    assert.equal(long.length, 80);
    assert.equal(long, `RUN ${"y".repeat(73)}...`);
  });
});

describe("engine-facts: parseContainerInspect and parseImageInspect", () => {
  it("parses a real container inspect", () => {
    const c = parseContainerInspect(jsonFixture("engine/container-inspect.json"));
    const ov = (id: string): string => `/var/lib/docker/overlay2/${id}/diff`;
    assert.deepEqual(c, {
      id: CAPTURED_ID,
      name: "dreamy_ride",
      image: "shadowlayer-demo/app:1",
      imageId: "sha256:e881e5b6bec6a20019b65b8bb4c28c0f532be2786b711e376d3b99eef819768c",
      state: "running",
      pid: 9881,
      labels: { "org.shadowlayer.demo-image": "app", "org.shadowlayer.recipe": "3ff7565b0c1e442c" },
      driver: "overlay2",
      upperDir: ov(CAPTURED_CACHE),
      lowerDirs: [
        ov(`${CAPTURED_CACHE}-init`),
        ov("8ddcff8a5acbf421d18a0ee895ee7e2070f5ce29791afca794014fdfaf55477f"),
        ov("a4be0b6197338e20ddac18b27940fa7f984f7b45cc50cd13c0dc5539724dd5c7"),
        ov("ba5eb42d8c34a8db5a9038e371eecdee476f0e4cdf6c5985df9234be71db5cf1"),
        ov("827fc05ddaea9d1e712a3ea2ec1cb84bb8102ff09e99be0c9b1ef7687b90b143"),
      ],
      mounts: [],
    });
  });

  it("parses the mounts of a real container with a volume and a read-only bind", () => {
    const c = parseContainerInspect(jsonFixture("engine/container-inspect-mounts.json"));
    assert.equal(c.id, "8aca2989242e9cf9802273117ab1a808da16b94a6710e08da8f1e0f94614b3bd");
    assert.equal(c.name, "amazing_allen");
    assert.equal(c.pid, 10397);
    assert.equal(c.labels["team"], "parsers");
    assert.deepEqual(c.mounts, [
      { type: "volume", name: "slparsers-vol", source: "/var/lib/docker/volumes/slparsers-vol/_data", destination: "/data", rw: true },
      { type: "bind", name: "", source: "/tmp/slbind", destination: "/bind", rw: false },
    ]);
  });

  it("parses a real image inspect", () => {
    const img = parseImageInspect(jsonFixture("engine/image-inspect.json"));
    const ov = (id: string): string => `/var/lib/docker/overlay2/${id}/diff`;
    assert.deepEqual(img, {
      id: "sha256:e881e5b6bec6a20019b65b8bb4c28c0f532be2786b711e376d3b99eef819768c",
      tags: ["shadowlayer-demo/app:1"],
      diffIds: chainFixture().diffIds,
      driver: "overlay2",
      layerDirs: [
        ov("8ddcff8a5acbf421d18a0ee895ee7e2070f5ce29791afca794014fdfaf55477f"),
        ov("a4be0b6197338e20ddac18b27940fa7f984f7b45cc50cd13c0dc5539724dd5c7"),
        ov("ba5eb42d8c34a8db5a9038e371eecdee476f0e4cdf6c5985df9234be71db5cf1"),
        ov("827fc05ddaea9d1e712a3ea2ec1cb84bb8102ff09e99be0c9b1ef7687b90b143"),
      ],
      created: "2026-11-27T09:40:59.184201468Z",
    });
  });

  it("handles a container that is not running and has no GraphDriver data", () => {
    const c = parseContainerInspect({ Id: "abc", Image: "sha256:def", State: { Status: "exited", Pid: 0 }, GraphDriver: { Name: "overlay2", Data: null } });
    assert.equal(c.state, "exited");
    assert.equal(c.pid, 0);
    assert.equal(c.name, "");
    assert.equal(c.upperDir, "");
    assert.deepEqual(c.lowerDirs, []);
    assert.deepEqual(c.labels, {});
  });

  it("rejects input that is not an object with SL_INVALID_ARGUMENT", () => {
    for (const bad of [null, undefined, 42, "x", [], [{}]]) {
      assert.throws(() => parseContainerInspect(bad), isInvalidArgument, `container ${JSON.stringify(bad)}`);
      assert.throws(() => parseImageInspect(bad), isInvalidArgument, `image ${JSON.stringify(bad)}`);
    }
    // Nested fields of the wrong shape, or required strings missing.
    assert.throws(() => parseContainerInspect({ Id: "a", Image: "b", State: "running" }), isInvalidArgument);
    assert.throws(() => parseContainerInspect({ Id: "a", Image: "b", Mounts: ["/data"] }), isInvalidArgument);
    assert.throws(() => parseContainerInspect({ Image: "b" }), isInvalidArgument);
    assert.throws(() => parseContainerInspect({ Id: 1, Image: "b" }), isInvalidArgument);
  });

  it("rejects RootFS.Layers that are not sha256 digests with SL_INVALID_ARGUMENT", () => {
    const good = jsonFixture("engine/image-inspect.json") as Record<string, unknown>;
    const withLayers = (layers: unknown): unknown => ({ ...good, RootFS: { Type: "layers", Layers: layers } });
    assert.doesNotThrow(() => parseImageInspect(withLayers(chainFixture().diffIds)));
    const hex = "e4ae850900ce9ff6121d844bd629b62451ff127fda431fda0bfc05e0ab971b87";
    for (const layers of [
      [hex], // no algorithm
      [`sha512:${hex}`],
      [`sha256:${hex.slice(1)}`], // 63 hex
      [`sha256:${hex}0`], // 65 hex
      [`sha256:${hex.toUpperCase()}`],
      [`sha256:${hex}`, 7],
      [`sha256:${hex}`, ""],
      `sha256:${hex}`, // not an array
      null,
    ]) {
      assert.throws(() => parseImageInspect(withLayers(layers)), isInvalidArgument, JSON.stringify(layers));
    }
    const noRootFs: Record<string, unknown> = { ...good };
    delete noRootFs["RootFS"];
    assert.throws(() => parseImageInspect(noRootFs), isInvalidArgument);
  });
});
