/**
 * The anomaly benchmark's image (test/bench/ANOMALY-BENCH.md): `sl-anb-svc:1`, built locally on
 * the demo's busybox base with three layers of its own, so each kind of process has a layer:
 *  - the web layer: /opt/web/bin/busybox (a copy of busybox; httpd runs from it) and /srv/www;
 *  - the job layer: /opt/job/bin/busybox (another copy; the periodic job's processes run from it)
 *    and /opt/job/run.sh, the job itself;
 *  - a config layer (/etc/anb.conf), with no executable.
 * The base layer's /bin/busybox runs the job container's entrypoint loop and its `sleep`.
 * Nothing is pulled; the image is rebuilt only when its recipe (the Dockerfile and the busybox
 * bytes) changed.
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { findBusybox } from "../../cli/demo-images.js";
import { followEngine } from "../../common/engine-progress.js";
import { Code } from "../../common/errors.js";

export const ANB_IMAGE = "sl-anb-svc:1";
const RECIPE_LABEL = "org.shadowlayer.anb-recipe";

/**
 * The periodic job: random data compressed and checksummed, plus a checksum of a file; its size
 * (64 KiB blocks) comes from JOB_BLOCKS. Every command runs from the job layer's busybox.
 */
export const JOB_SCRIPT = `B=/opt/job/bin/busybox
$B dd if=/dev/urandom bs=65536 count=\${JOB_BLOCKS:-16} 2>/dev/null | $B gzip -c | $B md5sum > /tmp/job.sum
$B sha256sum /opt/job/bin/busybox >> /tmp/job.sum
`;

function dockerfile(base: string): string {
  return `FROM ${base}
COPY web /opt/web/bin/busybox
RUN /opt/web/bin/busybox mkdir -p /srv/www && /opt/web/bin/busybox dd if=/dev/zero of=/srv/www/big.bin bs=1000 count=20 && echo '<h1>anb</h1>' > /srv/www/index.html
COPY job /opt/job/bin/busybox
COPY run.sh /opt/job/run.sh
RUN echo 'mode=bench' > /etc/anb.conf
CMD ["/bin/sh"]
`;
}

function context(files: Array<{ name: string; data: Buffer; mode: number }>): Readable {
  const p = tar.pack();
  for (const f of files) p.entry({ name: f.name, mode: f.mode, mtime: new Date(0) }, f.data);
  p.finalize();
  return Readable.from(p as AsyncIterable<Buffer>);
}

/** Builds ANB_IMAGE on `base` (the demo base image) unless an image of the same recipe exists. */
export async function ensureAnbImage(docker: Docker, base: string): Promise<string> {
  const busybox = findBusybox();
  const df = dockerfile(base);
  const recipe = createHash("sha256").update(busybox).update(df).update(JOB_SCRIPT).digest("hex").slice(0, 16);
  try {
    const info = (await docker.getImage(ANB_IMAGE).inspect()) as { Config?: { Labels?: Record<string, string> | null } };
    if (info.Config?.Labels?.[RECIPE_LABEL] === recipe) return ANB_IMAGE;
  } catch {
    // not built yet
  }
  const ctx = context([
    { name: "Dockerfile", data: Buffer.from(`${df}LABEL ${RECIPE_LABEL}=${recipe}\n`), mode: 0o644 },
    { name: "web", data: busybox, mode: 0o755 },
    { name: "job", data: busybox, mode: 0o755 },
    { name: "run.sh", data: Buffer.from(JOB_SCRIPT), mode: 0o644 },
  ]);
  await followEngine(docker, await docker.buildImage(ctx, { t: ANB_IMAGE, networkmode: "host", rm: true, forcerm: true }), `build of ${ANB_IMAGE}`, Code.Internal);
  return ANB_IMAGE;
}

/** Writes one file into a running container's writable layer through the engine (no process runs in the container). */
export async function dropFile(c: Docker.Container, dir: string, name: string, data: Buffer, mode: number): Promise<void> {
  const p = tar.pack();
  const parts = name.split("/");
  for (let i = 1; i < parts.length; i++) p.entry({ name: parts.slice(0, i).join("/"), type: "directory", mode: 0o755, mtime: new Date() });
  p.entry({ name, mode, mtime: new Date() }, data);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const ch of p as AsyncIterable<Buffer>) chunks.push(ch);
  await c.putArchive(Buffer.concat(chunks), { path: dir });
}
