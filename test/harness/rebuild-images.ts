/**
 * The rebuild strategies' test images, built locally (nothing is pulled), under names unique to
 * one call so parallel runs do not collide:
 *   base v1  busybox-static root + Debian 12 os-release + a dpkg status listing libc6 (Source:
 *            glibc) 2.36-9+deb12u1, vulnerable to DEBIAN-CVE-2023-4911 (the fixture feed)
 *   base v2  the same with 2.36-9+deb12u3 (the fixed version)
 *   app      FROM base v1, three layers (RUN, COPY, RUN), labelled with its base's name and its
 *            recipe: a context directory this helper writes and its Dockerfile
 * `cleanup()` removes the three images, the containers made from them and the context directory.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { findBusybox } from "../../cli/demo-images.js";
import { Code, ShadowError } from "../../common/errors.js";
import { SHADOW_LABELS, SOURCE_LABELS, type Builder, type ImageFacts, type StrategyContext } from "../../aggregator/rebuild/types.js";

export const VULNERABLE_GLIBC = "2.36-9+deb12u1";
export const FIXED_GLIBC = "2.36-9+deb12u3";
/** What the app's first layer writes, and the file it is in (restore's test changes it on disk). */
export const APP_MESSAGE_PATH = "srv/app/message.txt";
export const APP_MESSAGE = "the original message\n";

const APPLETS = ["sh", "cat", "echo", "mkdir", "sleep", "ls", "rm", "printf", "true"];

const OS_RELEASE = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
`;

function dpkgStatus(glibc: string): string {
  return `Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12986
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: ${glibc}
Description: GNU C Library: Shared libraries

Package: busybox
Status: install ok installed
Architecture: amd64
Version: 1:1.35.0-4
Description: Tiny utilities for small and embedded systems

`;
}

export interface RebuildImages {
  baseV1: string;
  baseV2: string;
  app: string;
  /** The app's build context (Dockerfile and files), as its recipe labels name it. */
  contextDir: string;
  /** The app's Dockerfile text. */
  dockerfile: string;
  docker: Docker;
  cleanup(): Promise<void>;
}

function packEntries(entries: Array<{ name: string; type?: "directory" | "symlink" | "file"; linkname?: string; data?: Buffer; mode?: number }>): Readable {
  const p = tar.pack();
  for (const e of entries) {
    const type = e.type ?? "file";
    if (type === "file") p.entry({ name: e.name, mode: e.mode ?? 0o644, mtime: new Date(0) }, e.data ?? Buffer.alloc(0));
    else if (type === "symlink") p.entry({ name: e.name, type, linkname: e.linkname ?? "", mtime: new Date(0) });
    else p.entry({ name: e.name, type, mode: 0o755, mtime: new Date(0) });
  }
  p.finalize();
  return Readable.from(p as AsyncIterable<Buffer>);
}

async function follow(docker: Docker, stream: NodeJS.ReadableStream, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string; errorDetail?: { message?: string } }>) => {
      const bad = out?.find((o) => o.error !== undefined || o.errorDetail !== undefined);
      if (err !== null) reject(new ShadowError(Code.Internal, `${what} failed: ${err.message}`, { cause: err }));
      else if (bad !== undefined) reject(new ShadowError(Code.Internal, `${what} failed: ${bad.error ?? bad.errorDetail?.message ?? "unknown"}`));
      else resolve();
    });
  });
}

async function importBase(docker: Docker, ref: string, busybox: Buffer, glibc: string): Promise<void> {
  const root = packEntries([
    { name: "bin", type: "directory" },
    { name: "etc", type: "directory" },
    { name: "tmp", type: "directory" },
    { name: "srv", type: "directory" },
    { name: "var", type: "directory" },
    { name: "var/lib", type: "directory" },
    { name: "var/lib/dpkg", type: "directory" },
    { name: "bin/busybox", data: busybox, mode: 0o755 },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, type: "symlink" as const, linkname: "busybox" })),
    { name: "etc/passwd", data: Buffer.from("root:x:0:0:root:/root:/bin/sh\n") },
    { name: "etc/os-release", data: Buffer.from(OS_RELEASE) },
    { name: "var/lib/dpkg/status", data: Buffer.from(dpkgStatus(glibc)) },
  ]);
  const i = ref.lastIndexOf(":");
  await follow(docker, (await docker.importImage(root, { repo: ref.slice(0, i), tag: ref.slice(i + 1), changes: ['CMD ["/bin/sh"]'] } as object)) as NodeJS.ReadableStream, `import of ${ref}`);
}

/** Builds base v1, base v2 and the app on v1 under fresh names. */
export async function buildRebuildImages(docker: Docker): Promise<RebuildImages> {
  const busybox = findBusybox();
  const run = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const repo = `shadowlayer-test/rebuild-${run}`;
  const baseV1 = `${repo}-base:1`;
  const baseV2 = `${repo}-base:2`;
  const app = `${repo}-app:1`;
  const contextDir = await mkdtemp(join(tmpdir(), "sl-recipe-"));
  const made: string[] = [];
  const cleanup = async (): Promise<void> => {
    for (const ref of [app, ...made.filter((r) => r !== app)]) {
      const users = await docker.listContainers({ all: true, filters: { ancestor: [ref] } }).catch(() => []);
      for (const c of users) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
      await docker.getImage(ref).remove({ force: true }).catch(() => undefined);
    }
    await rm(contextDir, { recursive: true, force: true });
  };
  try {
    await importBase(docker, baseV1, busybox, VULNERABLE_GLIBC);
    made.push(baseV1);
    await importBase(docker, baseV2, busybox, FIXED_GLIBC);
    made.push(baseV2);
    const dockerfile = `FROM ${baseV1}
RUN mkdir -p /srv/app && printf '${APP_MESSAGE.replace(/\n/g, "\\n")}' > /${APP_MESSAGE_PATH}
COPY app.conf /etc/app.conf
RUN echo 'build=1' > /srv/app/build.txt
LABEL ${SOURCE_LABELS.baseName}="${baseV1}" ${SOURCE_LABELS.recipeContext}="${contextDir}" ${SOURCE_LABELS.recipeDockerfile}="Dockerfile"
CMD ["/bin/cat", "/${APP_MESSAGE_PATH}"]
`;
    await writeFile(join(contextDir, "Dockerfile"), dockerfile);
    await mkdir(contextDir, { recursive: true });
    await writeFile(join(contextDir, "app.conf"), "threads=2\n");
    made.push(app);
    await follow(docker, await docker.buildImage({ context: contextDir, src: ["Dockerfile", "app.conf"] }, { t: app, networkmode: "host", rm: true, forcerm: true }), `build of ${app}`);
    return { baseV1, baseV2, app, contextDir, dockerfile, docker, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** A container (created, started, waited for) that prints a file of `image`: what a fresh container reads there. */
export async function readInFreshContainer(docker: Docker, image: string, path: string): Promise<string> {
  const c = await docker.createContainer({ Image: image, Cmd: ["/bin/cat", path], HostConfig: { NetworkMode: "none" } });
  try {
    await c.start();
    await c.wait();
    const logs = (await c.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
    // Multiplexed frames: 8-byte header (stream, 0, 0, 0, size BE) then the bytes.
    let out = "";
    for (let off = 0; off + 8 <= logs.length; ) {
      const size = logs.readUInt32BE(off + 4);
      out += logs.subarray(off + 8, off + 8 + size).toString("utf8");
      off += 8 + size;
    }
    return out;
  } finally {
    await c.remove({ force: true }).catch(() => undefined);
  }
}

/** A strategy context for a test: reasons an advisory, steps run as they are, a log that drops lines. */
export function strategyContext(builder: Builder, facts: ImageFacts, workDir: string, extra: Partial<StrategyContext> = {}): StrategyContext {
  return {
    jobId: "job-test",
    facts,
    reasons: ["DEBIAN-CVE-2023-4911"],
    sourceLayer: facts.diffIds[0] ?? "",
    vulnerable: [],
    builder,
    labels: { [SHADOW_LABELS.strategy]: "test", [SHADOW_LABELS.job]: "job-test" },
    baseMap: {},
    workDir,
    log: () => undefined,
    step: (_name, fn) => fn(),
    signal: new AbortController().signal,
    ...extra,
  };
}
