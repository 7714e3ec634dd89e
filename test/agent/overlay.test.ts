/**
 * The overlay model on real layer directories in a temp dir, written the way Docker's overlay2
 * keeps them: whiteouts as 0/0 character devices (and AUFS-style `.wh.` files as tar-unpacked
 * layers have them), opaque directories as the real `trusted.overlay.opaque` / `user.overlay.opaque`
 * xattr (set with setfattr, read back through libc) or the `.wh..wh..opq` marker. Then the LDG and
 * the inventory asked about the same hidden paths, which must agree.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { inventoryOf } from "../../agent/inventory/layer-inventory.js";
import type { ResolvedImage } from "../../agent/layers/image-layers.js";
import { LdgBuilder, writableLayerId } from "../../agent/layers/ldg-builder.js";
import { entryKindAt } from "../../agent/overlay/entry-kind.js";
import { imageRel, resolveLinkInImage } from "../../agent/overlay/image-path.js";
import { libcOpaqueXattrReader, readOpaqueXattr } from "../../agent/overlay/opaque-xattr.js";
import { OverlayStack } from "../../agent/overlay/overlay-stack.js";
import type { ContainerFacts } from "../../agent/runtime/engine-facts.js";
import { Code, ShadowError } from "../../common/errors.js";

// setfattr comes with Debian's attr package, which test/harness/docker-host.sh installs.
execFileSync("setfattr", ["--version"], { stdio: "ignore" });

let tmp: string;
before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), "shadowlayer-overlay-"));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

interface FakeLayers {
  dirs: string[];
  put(L: number, rel: string, body?: string): void;
  /** overlay2's whiteout: a 0/0 character device (needs root, as the agent has). */
  whiteout(L: number, rel: string): void;
  opaque(L: number, rel: string, how?: "trusted" | "user" | "marker", value?: string): void;
  link(L: number, rel: string, target: string): void;
}

let stacks = 0;
/** Layer directories L0 (bottom) .. L<n-1>. */
function layers(n: number): FakeLayers {
  const root = path.join(tmp, `s${stacks++}`);
  const dirs = Array.from({ length: n }, (_, i) => path.join(root, `L${i}`));
  for (const d of dirs) mkdirSync(d, { recursive: true });
  const abs = (L: number, rel: string): string => path.join(dirs[L] ?? "", rel);
  const parent = (L: number, rel: string): void => void mkdirSync(path.dirname(abs(L, rel)), { recursive: true });
  return {
    dirs,
    put: (L, rel, body = "x") => {
      parent(L, rel);
      writeFileSync(abs(L, rel), body);
    },
    whiteout: (L, rel) => {
      parent(L, rel);
      execFileSync("mknod", [abs(L, rel), "c", "0", "0"]);
    },
    opaque: (L, rel, how = "trusted", value = "y") => {
      mkdirSync(abs(L, rel), { recursive: true });
      if (how === "marker") writeFileSync(path.join(abs(L, rel), ".wh..wh..opq"), "");
      else execFileSync("setfattr", ["-n", `${how}.overlay.opaque`, "-v", value, abs(L, rel)]);
    },
    link: (L, rel, target) => {
      parent(L, rel);
      symlinkSync(target, abs(L, rel));
    },
  };
}

const layerOf = (s: OverlayStack, p: string): number => s.provider(p)?.layer ?? -1;

describe("overlay model: which layer provides a path", () => {
  it("picks the top-most layer holding the path, and tells entry kinds apart", () => {
    const l = layers(3);
    l.put(0, "bin/app");
    l.put(1, "bin/app");
    l.put(0, "bin/tool");
    l.put(2, "bin/tool");
    // A real character device (1/3, /dev/null) is an entry, not a whiteout.
    mkdirSync(path.join(l.dirs[1] ?? "", "dev"));
    execFileSync("mknod", [path.join(l.dirs[1] ?? "", "dev/null"), "c", "1", "3"]);
    l.link(2, "usr/bin/link", "/nowhere");
    const s = new OverlayStack(l.dirs);
    assert.deepEqual(s.provider("/bin/app"), { layer: 1, kind: "file" });
    assert.deepEqual(s.provider("bin/tool"), { layer: 2, kind: "file" });
    assert.deepEqual(s.provider("/dev/null"), { layer: 1, kind: "other" });
    assert.deepEqual(s.provider("/usr/bin/link"), { layer: 2, kind: "symlink" }, "a dangling symlink still is an entry");
    assert.deepEqual(s.provider("/bin"), { layer: 2, kind: "dir" });
    assert.equal(s.provider("/bin/nothing"), null);
    assert.deepEqual(
      s.views("/bin/tool").map((v) => v?.layer ?? -1),
      [0, 0, 2],
      "the view at each layer, bottom first",
    );
    assert.equal(new OverlayStack([]).provider("/bin/app"), null);
  });

  it("hides a path under a 0/0 whiteout, an AUFS .wh. file, and a whiteout or file in place of a parent", () => {
    const l = layers(3);
    for (const p of ["bin/gone", "bin/aufs", "opt/app/bin/x", "srv/data/x", "etc/conf"]) l.put(0, p);
    l.whiteout(1, "bin/gone");
    l.put(1, "bin/.wh.aufs", "");
    // `rm -rf /opt/app` in a RUN: overlay2 keeps one 0/0 device where the directory was.
    l.whiteout(2, "opt/app");
    l.put(2, "srv/data", "a file where a directory was");
    // Whited out in the middle, written again on top.
    l.whiteout(1, "etc/conf");
    l.put(2, "etc/conf");
    assert.equal(entryKindAt(path.join(l.dirs[1] ?? "", "bin/gone")), "whiteout");
    const s = new OverlayStack(l.dirs);
    assert.deepEqual(
      ["/bin/gone", "/bin/aufs", "/opt/app/bin/x", "/srv/data/x"].map((p) => layerOf(s, p)),
      [-1, -1, -1, -1],
    );
    assert.deepEqual(s.views("/opt/app/bin/x").map((v) => v?.layer ?? -1), [0, 0, -1]);
    assert.equal(layerOf(s, "/etc/conf"), 2);
    assert.equal(layerOf(new OverlayStack(l.dirs.slice(0, 2)), "/opt/app/bin/x"), 0, "visible below the layer that removed it");
  });

  it("hides what lies below an opaque directory: trusted or user xattr, or the marker; not a value other than y", () => {
    const l = layers(2);
    for (const d of ["t", "u", "m", "n"]) {
      l.put(0, `${d}/dir/old`);
      l.put(0, `${d}/dir/kept`);
    }
    l.opaque(1, "t/dir", "trusted");
    l.opaque(1, "u/dir", "user");
    l.opaque(1, "m/dir", "marker");
    l.opaque(1, "n/dir", "trusted", "n");
    for (const d of ["t", "u", "m"]) l.put(1, `${d}/dir/kept`);
    const s = new OverlayStack(l.dirs);
    assert.deepEqual(
      ["t", "u", "m"].map((d) => [layerOf(s, `/${d}/dir/old`), layerOf(s, `/${d}/dir/kept`)]),
      [
        [-1, 1],
        [-1, 1],
        [-1, 1],
      ],
    );
    assert.equal(layerOf(s, "/n/dir/old"), 0);
    // Opaque higher up hides deeper paths too.
    const m = layers(2);
    m.put(0, "usr/lib/node_modules/a/package.json");
    m.opaque(1, "usr/lib");
    m.put(1, "usr/lib/other");
    assert.equal(layerOf(new OverlayStack(m.dirs), "/usr/lib/node_modules/a/package.json"), -1);
  });

  it("follows symlinked parents through the merged view, inside the image only", () => {
    const l = layers(3);
    // A usrmerged base: bin -> usr/bin; a later layer upgrades usr/bin/dash.
    l.link(0, "bin", "usr/bin");
    l.put(0, "usr/bin/dash");
    l.put(0, "usr/bin/ls");
    l.put(2, "usr/bin/dash");
    // An absolute link must resolve inside the image, never to the host's own /etc.
    l.link(1, "opt/hostetc", "/etc");
    l.link(1, "loop/a", "b");
    l.link(1, "loop/b", "a");
    const s = new OverlayStack(l.dirs);
    assert.deepEqual(s.locate("/bin/dash"), { rel: "usr/bin/dash", provider: { layer: 2, kind: "file" } });
    assert.deepEqual(s.locate("/bin/ls"), { rel: "usr/bin/ls", provider: { layer: 0, kind: "file" } });
    assert.equal(s.provider("/bin/dash"), null, "without following, the literal path goes through a symlink");
    assert.equal(s.locate("/opt/hostetc/passwd"), undefined);
    l.put(0, "etc/passwd");
    assert.deepEqual(new OverlayStack(l.dirs).locate("/opt/hostetc/passwd")?.provider, { layer: 0, kind: "file" });
    assert.equal(s.locate("/loop/a/x"), undefined, "a loop gives up");
    assert.deepEqual(s.locate("/usr/bin/dash")?.provider, { layer: 2, kind: "file" });
  });

  it("walks links as RESOLVE_IN_ROOT does: a link to the root, 40 links but not 41, '..' stopping at the root", () => {
    const l = layers(2);
    l.put(0, "bin/busybox");
    l.link(1, "rootlink", "/");
    l.link(1, "up", "../../../../..");
    // A chain of directory links c0 -> c1 -> ... -> c40 -> bin: reaching bin/busybox through cK takes 41 - K links.
    for (let k = 0; k <= 40; k++) l.link(1, `chain/c${k}`, k === 40 ? "/bin" : `c${k + 1}`);
    const s = new OverlayStack(l.dirs);
    assert.deepEqual(s.locate("/rootlink/bin/busybox"), { rel: "bin/busybox", provider: { layer: 0, kind: "file" } });
    assert.deepEqual(s.locate("/up/up/bin/busybox")?.rel, "bin/busybox");
    assert.deepEqual(s.locate("/chain/c1/busybox")?.rel, "bin/busybox", "40 links are followed");
    assert.equal(s.locate("/chain/c0/busybox"), undefined, "the 41st is not");
  });

  it("maps paths and symlink targets into the image", () => {
    assert.equal(imageRel("///usr/bin/x"), "usr/bin/x");
    assert.equal(resolveLinkInImage("etc/os-release", "../usr/lib/os-release"), "usr/lib/os-release");
    assert.equal(resolveLinkInImage("etc/os-release", "/usr/lib/os-release"), "usr/lib/os-release");
    assert.equal(resolveLinkInImage("etc/os-release", "../../../../usr/lib/os-release"), "usr/lib/os-release");
    assert.equal(resolveLinkInImage("etc/x", ".."), undefined);
  });
});

describe("overlay model: opaque xattrs through libc", () => {
  it("reads the flag without spawning anything", () => {
    const l = layers(1);
    l.opaque(0, "t", "trusted");
    l.opaque(0, "u", "user");
    l.opaque(0, "n", "trusted", "n");
    l.opaque(0, "yy", "trusted", "yy");
    l.put(0, "plain/x");
    const at = (rel: string): string => path.join(l.dirs[0] ?? "", rel);
    assert.deepEqual(
      ["t", "u", "n", "yy", "plain", "missing"].map((d) => readOpaqueXattr(at(d))),
      [true, true, false, false, false, false],
    );
  });

  it("says why when the C library cannot be loaded, and reports each layer where that could hide a file", () => {
    const read = libcOpaqueXattrReader("libc.no-such-variant.so.1");
    assert.throws(
      () => read(tmp),
      (err: unknown) => err instanceof ShadowError && err.code === Code.FailedPrecondition && /^cannot read overlay xattrs: libc\.no-such-variant\.so\.1 cannot be loaded/.test(err.message),
    );
    const l = layers(3);
    l.put(0, "srv/a/file");
    l.opaque(1, "srv/a");
    l.put(1, "srv/a/other");
    // Layer 2 holds directories above a lower directory only: nothing there could hide a file.
    l.put(0, "data/sub/keep");
    l.put(2, "data/other");
    const s = new OverlayStack(l.dirs, read);
    assert.equal(layerOf(s, "/srv/a/file"), 0, "taken as not opaque");
    assert.equal(layerOf(s, "/data/sub"), 0);
    assert.deepEqual([...s.xattrProblems.keys()], [1]);
    assert.equal(s.xattrProblems.get(1)?.rel, "srv");
    // The marker needs no xattr: still opaque.
    l.opaque(1, "srv/a", "marker");
    assert.equal(layerOf(new OverlayStack(l.dirs, read), "/srv/a/file"), -1);
  });
});

describe("overlay model: the LDG and the inventory agree", () => {
  it("give the same answer for the same hidden, opaque and visible paths", async () => {
    const l = layers(3);
    const upper = path.join(tmp, "upper");
    mkdirSync(upper);
    const manifest = (name: string, version: string): string => JSON.stringify({ name, version });
    const NM = "usr/lib/node_modules";
    l.put(0, `${NM}/a/package.json`, manifest("a", "1.0.0"));
    l.put(0, `${NM}/b/package.json`, manifest("b", "1.0.0"));
    l.put(0, `${NM}/c/package.json`, manifest("c", "1.0.0"));
    l.put(0, "opt/app/node_modules/d/package.json", manifest("d", "1.0.0"));
    // Layer 1: node_modules made opaque (xattr), b and c upgraded; layer 2: /opt/app removed.
    l.opaque(1, NM);
    l.put(1, `${NM}/b/package.json`, manifest("b", "1.1.0"));
    l.put(1, `${NM}/c/package.json`, manifest("c", "2.0.0"));
    l.whiteout(2, "opt/app");
    // The running container wrote d's manifest back.
    mkdirSync(path.join(upper, "opt/app/node_modules/d"), { recursive: true });
    writeFileSync(path.join(upper, "opt/app/node_modules/d/package.json"), manifest("d", "1.0.0"));

    const diffId = (i: number): string => `sha256:${createHash("sha256").update(`${l.dirs[i]}`).digest("hex")}`;
    const inv = await inventoryOf(l.dirs.map((dir, i) => ({ diffId: diffId(i), dir })));
    assert.deepEqual(
      inv.packages.map((p) => [p.path, p.layerId]),
      [
        [`/${NM}/b/package.json`, diffId(1)],
        [`/${NM}/c/package.json`, diffId(1)],
      ],
    );
    assert.deepEqual(inv.partial, []);

    const image: ResolvedImage = {
      id: "sha256:image",
      tags: [],
      driver: "overlay2",
      historySource: "none",
      layers: l.dirs.map((dir, i) => ({ diffId: diffId(i), chainId: "", cacheId: "", dir, sizeBytes: 0n, createdBy: "", created: "", comment: "" })),
    };
    const c: ContainerFacts = {
      id: "c0ffee",
      name: "agree",
      image: "img",
      imageId: image.id,
      state: "running",
      pid: 0,
      labels: {},
      driver: "overlay2",
      upperDir: upper,
      lowerDirs: [],
      mounts: [],
    };
    const ldg = new LdgBuilder({ node: "n", procRoot: "/proc", dockerRoot: tmp });
    const at = (p: string): [string, boolean, string] => {
      const a = ldg.attribute(c, image, { exe: p, exeDeleted: false });
      return [a.layerId, a.drift, a.reason];
    };
    const rw = writableLayerId(c.id);
    // What the inventory lists (each a new version, so attributed where its file is), the LDG
    // attributes to the same layer.
    for (const p of inv.packages) assert.deepEqual(at(p.path), [p.layerId, false, ""]);
    // Hidden by the opaque directory: in no image layer, for both.
    assert.deepEqual(at(`/${NM}/a/package.json`), [rw, true, "added"]);
    // Below a whited-out directory: the image does not have it, so the container's copy is
    // added, not modified. (The old LDG lookup missed whiteouts of a parent and said "modified",
    // and took a.json from layer 0 through the opaque directory.)
    assert.deepEqual(at("/opt/app/node_modules/d/package.json"), [rw, true, "added"]);
    assert.equal(
      inv.packages.some((p) => p.name === "a" || p.name === "d"),
      false,
    );
  });
});
