/**
 * Builds the demo and test images locally (nothing is pulled): two base images imported from a
 * busybox-static root, each with a Debian 12 os-release and a dpkg database listing `libc6`
 * (base:1 at 2.36-9+deb12u1, which the real advisory DEBIAN-CVE-2023-4911 affects; base:2 at
 * 2.36-9+deb12u3, where Debian fixed it), and an app image of four layers on base:1, one of which
 * adds an executable of its own (/opt/app/bin/busybox, a copy, so processes run from it belong to
 * that middle layer). The app names its base and the base's fixed successor in labels, which is
 * what a `rebase` shadow needs.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { followEngine } from "../common/engine-progress.js";
import { Code, ShadowError } from "../common/errors.js";
import { SOURCE_LABELS } from "../aggregator/rebuild/types.js";

/** The vulnerable base (libc6 2.36-9+deb12u1). */
export const BASE_IMAGE = "shadowlayer-demo/base:1";
/** The same base with Debian's fix (libc6 2.36-9+deb12u3). */
export const FIXED_BASE_IMAGE = "shadowlayer-demo/base:2";
export const APP_IMAGE = "shadowlayer-demo/app:1";
/** The label naming the base image that replaces an image's base (what `rebase` moves it onto). */
export const BASE_SUCCESSOR_LABEL = SOURCE_LABELS.baseSuccessor;
/** The glibc versions of the two bases, as Debian published them. */
export const VULNERABLE_LIBC = "2.36-9+deb12u1";
export const FIXED_LIBC = "2.36-9+deb12u3";
/** Label every demo/test container carries, so cleanup can find them all. */
export const DEMO_LABEL = "org.shadowlayer.demo";
const RECIPE_LABEL = "org.shadowlayer.recipe";

const APPLETS = ["sh", "ls", "cat", "cp", "echo", "mkdir", "sleep", "httpd", "wget", "nc", "ps", "rm", "chmod", "yes", "true", "dd", "head", "env", "id", "touch"];

export const APP_DOCKERFILE = `FROM ${BASE_IMAGE}
RUN mkdir -p /srv/www && echo '<h1>shadowlayer demo</h1>' > /srv/www/index.html
COPY tool /opt/app/bin/busybox
RUN echo 'threads=2' > /etc/app.conf && chmod 644 /etc/app.conf
ENV APP_MODE=demo
LABEL org.shadowlayer.demo-image=app ${SOURCE_LABELS.baseName}=${BASE_IMAGE} ${BASE_SUCCESSOR_LABEL}=${FIXED_BASE_IMAGE}
CMD ["/opt/app/bin/busybox", "sleep", "3600"]
`;

/** Debian 12's /etc/os-release, as the distribution ships it. */
export const DEBIAN_12_OS_RELEASE = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
`;

/** A dpkg status database holding the libc6 stanza of a Debian 12 host, at `version` (its long Breaks list cut). */
export function dpkgStatus(version: string): string {
  return `Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 13001
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: ${version}
Replaces: libc6-amd64
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Suggests: glibc-doc, debconf | debconf-2.0, libc-l10n, locales, libnss-nis, libnss-nisplus
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system. This package includes shared versions of the standard C library
 and the standard math library, as well as many others.
Homepage: https://www.gnu.org/software/libc/libc.html

`;
}

/** A 64-bit little-endian ELF with no PT_INTERP program header runs in an empty root. */
export function isStaticElf64(b: Buffer): boolean {
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return false;
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const phnum = b.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length) return false;
    if (b.readUInt32LE(off) === 3) return false; // PT_INTERP
  }
  return true;
}

/** The first static busybox of `explicit` (the demo's SHADOWLAYER_BUSYBOX) and the usual places. */
export function findBusybox(explicit?: string): Buffer {
  const candidates = [explicit, "/bin/busybox", "/usr/bin/busybox"].filter((p): p is string => !!p);
  for (const p of candidates) {
    try {
      const b = readFileSync(p);
      if (isStaticElf64(b)) return b;
    } catch {
      // try the next one
    }
  }
  throw new ShadowError(Code.FailedPrecondition, "no static busybox found: `apt-get install -y busybox-static` (or run test/harness/docker-host.sh)");
}

function pack(entries: Array<{ name: string; type?: "directory" | "symlink" | "file"; linkname?: string; data?: Buffer; mode?: number }>): Readable {
  const p = tar.pack();
  for (const e of entries) {
    const type = e.type ?? "file";
    if (type === "file") p.entry({ name: e.name, mode: e.mode ?? 0o644, mtime: new Date(0) }, e.data ?? Buffer.alloc(0));
    else if (type === "symlink") p.entry({ name: e.name, type, linkname: e.linkname ?? "", mtime: new Date(0) });
    else p.entry({ name: e.name, type, mode: 0o755, mtime: new Date(0) });
  }
  p.finalize();
  // tar-stream packs are streamx streams; dockerode wants a Node stream.
  return Readable.from(p as AsyncIterable<Buffer>);
}

async function follow(docker: Docker, stream: NodeJS.ReadableStream, what: string): Promise<void> {
  await followEngine(docker, stream, what, Code.Internal);
}

async function recipeOf(docker: Docker, ref: string): Promise<string | undefined> {
  try {
    const info = (await docker.getImage(ref).inspect()) as { Config?: { Labels?: Record<string, string> | null } };
    return info.Config?.Labels?.[RECIPE_LABEL] ?? "";
  } catch {
    return undefined;
  }
}

/** One base image's root: busybox, a passwd, Debian's os-release and a dpkg database with libc6 at `libc`. */
function baseRoot(busybox: Buffer, libc: string): Readable {
  return pack([
    { name: "bin", type: "directory" },
    { name: "etc", type: "directory" },
    { name: "tmp", type: "directory" },
    { name: "var", type: "directory" },
    { name: "var/lib", type: "directory" },
    { name: "var/lib/dpkg", type: "directory" },
    { name: "bin/busybox", data: busybox, mode: 0o755 },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, type: "symlink" as const, linkname: "busybox" })),
    { name: "etc/passwd", data: Buffer.from("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n") },
    { name: "etc/group", data: Buffer.from("root:x:0:\nnogroup:x:65534:\n") },
    { name: "etc/os-release", data: Buffer.from(DEBIAN_12_OS_RELEASE) },
    { name: "var/lib/dpkg/status", data: Buffer.from(dpkgStatus(libc)) },
  ]);
}

async function importBase(docker: Docker, ref: string, root: Readable, recipe: string): Promise<void> {
  const [repo, tag] = ref.split(":");
  await follow(docker, (await docker.importImage(root, { repo, tag, changes: [`LABEL ${RECIPE_LABEL}=${recipe}`, 'CMD ["/bin/sh"]'] } as object)) as NodeJS.ReadableStream, `import of ${ref}`);
}

export interface DemoImages {
  /** BASE_IMAGE, FIXED_BASE_IMAGE, APP_IMAGE. */
  base: string;
  fixedBase: string;
  app: string;
  /** Whether they were (re)built now, rather than found from the same recipe. */
  built: boolean;
}

/** Builds the three images unless images from the same recipe are already there. */
export async function ensureDemoImages(docker: Docker, log: (msg: string) => void = () => {}, busyboxPath?: string): Promise<DemoImages> {
  const busybox = findBusybox(busyboxPath);
  const h = createHash("sha256").update(busybox).update(APP_DOCKERFILE).update(APPLETS.join()).update(DEBIAN_12_OS_RELEASE);
  for (const v of [VULNERABLE_LIBC, FIXED_LIBC]) h.update(dpkgStatus(v));
  const recipe = h.digest("hex").slice(0, 16);
  const images: DemoImages = { base: BASE_IMAGE, fixedBase: FIXED_BASE_IMAGE, app: APP_IMAGE, built: false };
  const found = await Promise.all([BASE_IMAGE, FIXED_BASE_IMAGE, APP_IMAGE].map((ref) => recipeOf(docker, ref)));
  if (found.every((r) => r === recipe)) return images;
  log(`building ${BASE_IMAGE} (libc6 ${VULNERABLE_LIBC}) and ${FIXED_BASE_IMAGE} (libc6 ${FIXED_LIBC}) from busybox-static`);
  // The successor is named on the app, not on base:1: every image built FROM base:1 (test images
  // too) would inherit a label there.
  await importBase(docker, BASE_IMAGE, baseRoot(busybox, VULNERABLE_LIBC), recipe);
  await importBase(docker, FIXED_BASE_IMAGE, baseRoot(busybox, FIXED_LIBC), recipe);
  log(`building ${APP_IMAGE} (4 layers)`);
  const ctx = pack([
    { name: "Dockerfile", data: Buffer.from(`${APP_DOCKERFILE}LABEL ${RECIPE_LABEL}=${recipe}\n`) },
    { name: "tool", data: busybox, mode: 0o755 },
  ]);
  await follow(docker, await docker.buildImage(ctx, { t: APP_IMAGE, networkmode: "host", rm: true, forcerm: true }), `build of ${APP_IMAGE}`);
  return { ...images, built: true };
}
