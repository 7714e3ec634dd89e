/**
 * The package-inventory test image, built locally on the demo base image (nothing is pulled):
 *   base  busybox-static (cli/demo-images.ts)
 *   A     COPY: /var/lib/dpkg/status (libssl3 3.0.9-1, zlib1g 1:1.2.13.dfsg-1), /etc/os-release (Debian 12)
 *   B     COPY: /var/lib/dpkg/status rewritten (libssl3 3.0.11-1~deb12u2, zlib1g gone)
 *   C     COPY: /usr/lib/node_modules/{lodash 4.17.20,left-pad 1.3.0}, dist-packages requests 2.25.0,
 *         /opt/venv/.../site-packages six 1.16.0
 *   D     RUN: removes left-pad (overlay2 records a whiteout) and replaces the venv's site-packages
 *         with one holding idna 3.4 (overlay2 records an opaque directory)
 * The layer files live in test/fixtures/inventory/image/; the image is rebuilt only when they, the
 * Dockerfile or the base image change (recipe label).
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path, { dirname } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { ensureDemoImages } from "../../cli/demo-images.js";
import { Code, ShadowError } from "../../common/errors.js";

export const INVENTORY_IMAGE = "shadowlayer-demo/inventory:1";
const RECIPE_LABEL = "org.shadowlayer.recipe";
const LAYER_DIRS = ["layer-a", "layer-b", "layer-c"];

// Compiled to dist/test/harness/; SHADOWLAYER_REPO_ROOT overrides the guess.
const repoRoot = process.env["SHADOWLAYER_REPO_ROOT"] ?? path.resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const INVENTORY_IMAGE_FIXTURES = path.join(repoRoot, "test/fixtures/inventory/image");

export function inventoryDockerfile(base: string): string {
  const venv = "/opt/venv/lib/python3.11/site-packages";
  return `FROM ${base}
COPY layer-a/ /
COPY layer-b/ /
COPY layer-c/ /
RUN rm -rf /usr/lib/node_modules/left-pad ${venv} && mkdir -p ${venv}/idna-3.4.dist-info && printf 'Metadata-Version: 2.1\\nName: idna\\nVersion: 3.4\\n\\n' > ${venv}/idna-3.4.dist-info/METADATA
LABEL org.shadowlayer.demo-image=inventory
`;
}

interface CtxEntry {
  name: string;
  dir: boolean;
  data?: Buffer;
}

function fixtureEntries(): CtxEntry[] {
  const out: CtxEntry[] = [];
  const walk = (rel: string): void => {
    const entries = readdirSync(path.join(INVENTORY_IMAGE_FIXTURES, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const child = `${rel}/${e.name}`;
      if (e.isDirectory()) {
        out.push({ name: child, dir: true });
        walk(child);
      } else if (e.isFile()) {
        out.push({ name: child, dir: false, data: readFileSync(path.join(INVENTORY_IMAGE_FIXTURES, child)) });
      }
    }
  };
  for (const l of LAYER_DIRS) {
    out.push({ name: l, dir: true });
    walk(l);
  }
  return out;
}

function packContext(entries: CtxEntry[]): Readable {
  const p = tar.pack();
  for (const e of entries) {
    if (e.dir) p.entry({ name: e.name, type: "directory", mode: 0o755, mtime: new Date(0) });
    else p.entry({ name: e.name, mode: 0o644, mtime: new Date(0) }, e.data ?? Buffer.alloc(0));
  }
  p.finalize();
  return Readable.from(p as AsyncIterable<Buffer>);
}

async function inspectOrUndefined(docker: Docker, ref: string): Promise<{ id: string; recipe: string } | undefined> {
  try {
    const info = (await docker.getImage(ref).inspect()) as { Id: string; Config?: { Labels?: Record<string, string> | null } };
    return { id: info.Id, recipe: info.Config?.Labels?.[RECIPE_LABEL] ?? "" };
  } catch {
    return undefined;
  }
}

async function followBuild(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string; errorDetail?: { message?: string } }>) => {
      const bad = out?.find((o) => o.error !== undefined || o.errorDetail !== undefined);
      if (err !== null) reject(new ShadowError(Code.Internal, `build of ${INVENTORY_IMAGE} failed: ${err.message}`, { cause: err }));
      else if (bad !== undefined) reject(new ShadowError(Code.Internal, `build of ${INVENTORY_IMAGE} failed: ${bad.error ?? bad.errorDetail?.message ?? "unknown"}`));
      else resolve();
    });
  });
}

/** Builds the inventory test image unless one from the same recipe is already there. */
export async function ensureInventoryImage(docker: Docker, log: (msg: string) => void = () => {}): Promise<{ image: string; built: boolean }> {
  const { base } = await ensureDemoImages(docker, log);
  const baseInfo = await inspectOrUndefined(docker, base);
  if (baseInfo === undefined) throw new ShadowError(Code.NotFound, `base image ${base} is missing after ensureDemoImages`);
  const dockerfile = inventoryDockerfile(base);
  const entries = fixtureEntries();
  const h = createHash("sha256").update(baseInfo.id).update(dockerfile);
  for (const e of entries) h.update(`${e.dir ? "d" : "f"}:${e.name}\0`).update(e.data ?? "");
  const recipe = h.digest("hex").slice(0, 16);
  const old = await inspectOrUndefined(docker, INVENTORY_IMAGE);
  if (old?.recipe === recipe) return { image: INVENTORY_IMAGE, built: false };

  log(`building ${INVENTORY_IMAGE} (4 layers on ${base})`);
  const ctx = packContext([{ name: "Dockerfile", dir: false, data: Buffer.from(`${dockerfile}LABEL ${RECIPE_LABEL}=${recipe}\n`) }, ...entries]);
  await followBuild(docker, await docker.buildImage(ctx, { t: INVENTORY_IMAGE, networkmode: "host", rm: true, forcerm: true }));
  // The image from the previous recipe is now untagged: drop it (best effort, a container may still use it).
  if (old !== undefined) await docker.getImage(old.id).remove().catch(() => undefined);
  return { image: INVENTORY_IMAGE, built: true };
}
