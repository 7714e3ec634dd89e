/**
 * Builds the demo and test images locally (nothing is pulled): a base image imported from a
 * busybox-static root, and an app image of four layers on it, one of which adds an executable of
 * its own (/opt/app/bin/busybox, a copy, so processes run from it belong to that middle layer).
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { Code, ShadowError } from "../common/errors.js";

export const BASE_IMAGE = "shadowlayer-demo/base:1";
export const APP_IMAGE = "shadowlayer-demo/app:1";
/** Label every demo/test container carries, so cleanup can find them all. */
export const DEMO_LABEL = "org.shadowlayer.demo";
const RECIPE_LABEL = "org.shadowlayer.recipe";

const APPLETS = ["sh", "ls", "cat", "cp", "echo", "mkdir", "sleep", "httpd", "wget", "nc", "ps", "rm", "chmod", "yes", "true", "dd", "head", "env", "id", "touch"];

export const APP_DOCKERFILE = `FROM ${BASE_IMAGE}
RUN mkdir -p /srv/www && echo '<h1>shadowlayer demo</h1>' > /srv/www/index.html
COPY tool /opt/app/bin/busybox
RUN echo 'threads=2' > /etc/app.conf && chmod 644 /etc/app.conf
ENV APP_MODE=demo
LABEL org.shadowlayer.demo-image=app
CMD ["/opt/app/bin/busybox", "sleep", "3600"]
`;

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
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string; errorDetail?: { message?: string } }>) => {
      const bad = out?.find((o) => o.error !== undefined || o.errorDetail !== undefined);
      if (err !== null) reject(new ShadowError(Code.Internal, `${what} failed: ${err.message}`, { cause: err }));
      else if (bad !== undefined) reject(new ShadowError(Code.Internal, `${what} failed: ${bad.error ?? bad.errorDetail?.message ?? "unknown"}`));
      else resolve();
    });
  });
}

async function labelOf(docker: Docker, ref: string): Promise<string | undefined> {
  try {
    const info = (await docker.getImage(ref).inspect()) as { Config?: { Labels?: Record<string, string> | null } };
    return info.Config?.Labels?.[RECIPE_LABEL] ?? "";
  } catch {
    return undefined;
  }
}

/** Builds the two images unless images from the same recipe are already there. */
export async function ensureDemoImages(docker: Docker, log: (msg: string) => void = () => {}, busyboxPath?: string): Promise<{ base: string; app: string; built: boolean }> {
  const busybox = findBusybox(busyboxPath);
  const recipe = createHash("sha256").update(busybox).update(APP_DOCKERFILE).update(APPLETS.join()).digest("hex").slice(0, 16);
  if ((await labelOf(docker, BASE_IMAGE)) === recipe && (await labelOf(docker, APP_IMAGE)) === recipe) {
    return { base: BASE_IMAGE, app: APP_IMAGE, built: false };
  }
  log(`building ${BASE_IMAGE} from busybox-static`);
  const root = pack([
    { name: "bin", type: "directory" },
    { name: "etc", type: "directory" },
    { name: "tmp", type: "directory" },
    { name: "bin/busybox", data: busybox, mode: 0o755 },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, type: "symlink" as const, linkname: "busybox" })),
    { name: "etc/passwd", data: Buffer.from("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n") },
    { name: "etc/group", data: Buffer.from("root:x:0:\nnogroup:x:65534:\n") },
  ]);
  const [repo, tag] = BASE_IMAGE.split(":");
  await follow(
    docker,
    (await docker.importImage(root, { repo, tag, changes: [`LABEL ${RECIPE_LABEL}=${recipe}`, 'CMD ["/bin/sh"]'] } as object)) as NodeJS.ReadableStream,
    `import of ${BASE_IMAGE}`,
  );
  log(`building ${APP_IMAGE} (4 layers)`);
  const ctx = pack([
    { name: "Dockerfile", data: Buffer.from(`${APP_DOCKERFILE}LABEL ${RECIPE_LABEL}=${recipe}\n`) },
    { name: "tool", data: busybox, mode: 0o755 },
  ]);
  await follow(docker, await docker.buildImage(ctx, { t: APP_IMAGE, networkmode: "host", rm: true, forcerm: true }), `build of ${APP_IMAGE}`);
  return { base: BASE_IMAGE, app: APP_IMAGE, built: true };
}
