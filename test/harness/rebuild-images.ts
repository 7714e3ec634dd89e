/**
 * The rebuild strategies' test images, built locally (nothing is pulled), under names unique to
 * one call so parallel runs do not collide:
 *   base v1  busybox-static root + Debian 12 os-release + a dpkg status listing libc6 (Source:
 *            glibc) 2.36-9+deb12u1, vulnerable to DEBIAN-CVE-2023-4911 (the fixture feed)
 *   base v2  the same with 2.36-9+deb12u3 (the fixed version)
 *   app      FROM base v1, three layers (RUN, COPY, RUN), labelled with its base's name and its
 *            recipe: a context directory this helper writes and its Dockerfile
 * `cleanup()` removes the three images, the containers made from them and the context directories.
 * The bases are built FROM the demo base image (busybox-static, cli/demo-images.ts).
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import type Docker from "dockerode";
import { DEBIAN_12_OS_RELEASE, dpkgStatus, ensureDemoImages } from "../../cli/demo-images.js";
import { Code } from "../../common/errors.js";
import { followEngine } from "../../common/engine-progress.js";
import { SHADOW_LABELS, SOURCE_LABELS, type Builder, type ImageFacts, type StrategyContext } from "../../aggregator/rebuild/types.js";
import { testEngine } from "./engine.js";

export const VULNERABLE_GLIBC = "2.36-9+deb12u1";
export const FIXED_GLIBC = "2.36-9+deb12u3";
/** What the app's first layer writes, and the file it is in (restore's test changes it on disk). */
export const APP_MESSAGE_PATH = "srv/app/message.txt";
export const APP_MESSAGE = "the original message\n";

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

/** `docker build` of a context directory holding `files` (Dockerfile among them). */
async function buildDir(docker: Docker, dir: string, files: Record<string, string>, tag: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    await mkdir(join(dir, name, ".."), { recursive: true });
    await writeFile(join(dir, name), text);
  }
  // No cache: the restore test changes a layer on disk, which a later build must never reuse.
  const stream = await docker.buildImage({ context: dir, src: Object.keys(files) }, { t: tag, networkmode: "host", rm: true, forcerm: true, nocache: true });
  await followEngine(docker, stream, `build of ${tag}`, Code.Internal);
}

/** Builds base v1, base v2 and the app on v1 under fresh names. */
export async function buildRebuildImages(docker: Docker): Promise<RebuildImages> {
  const { base: demoBase } = await ensureDemoImages(docker);
  const run = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const repo = `shadowlayer-test/rebuild-${run}`;
  const baseV1 = `${repo}-base:1`;
  const baseV2 = `${repo}-base:2`;
  const app = `${repo}-app:1`;
  const dir = await mkdtemp(join(tmpdir(), "sl-recipe-"));
  const contextDir = join(dir, "app");
  const made: string[] = [];
  const cleanup = async (): Promise<void> => {
    for (const ref of [app, ...made.filter((r) => r !== app)]) {
      const users = await docker.listContainers({ all: true, filters: { ancestor: [ref] } }).catch(() => []);
      for (const c of users) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
      await docker.getImage(ref).remove({ force: true }).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (const [ref, glibc] of [[baseV1, VULNERABLE_GLIBC], [baseV2, FIXED_GLIBC]] as const) {
      made.push(ref);
      const files = { Dockerfile: `FROM ${demoBase}\nCOPY root/ /\n`, "root/etc/os-release": DEBIAN_12_OS_RELEASE, "root/var/lib/dpkg/status": dpkgStatus(glibc) };
      await buildDir(docker, join(dir, `base-${glibc}`), files, ref);
    }
    const dockerfile = `FROM ${baseV1}
RUN mkdir -p /srv/app && echo '${APP_MESSAGE.trim()}' > /${APP_MESSAGE_PATH}
COPY app.conf /etc/app.conf
RUN echo 'build=1' > /srv/app/build.txt
LABEL ${SOURCE_LABELS.baseName}="${baseV1}" ${SOURCE_LABELS.recipeContext}="${contextDir}" ${SOURCE_LABELS.recipeDockerfile}="Dockerfile"
CMD ["/bin/cat", "/${APP_MESSAGE_PATH}"]
`;
    made.push(app);
    await buildDir(docker, contextDir, { Dockerfile: dockerfile, "app.conf": "threads=2\n" }, app);
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

/**
 * For a describe block: the test images built before its tests on the local engine (as a builder
 * with its data root), and everything removed after them, with the images whose ids the tests
 * push to `made`.
 */
export function useRebuildImages(): { readonly images: RebuildImages; readonly builder: Builder; made: string[] } {
  let images: RebuildImages | undefined;
  let builder: Builder | undefined;
  const made: string[] = [];
  before(async () => {
    const eng = await testEngine();
    images = await buildRebuildImages(eng.docker);
    builder = { name: "local", docker: eng.docker, limits: {}, localRoot: eng.info.rootDir };
  });
  after(async () => {
    for (const id of made) await images?.docker.getImage(id).remove({ force: true }).catch(() => undefined);
    await images?.cleanup();
  });
  return {
    get images(): RebuildImages {
      if (images === undefined) throw new Error("rebuild images used outside their tests");
      return images;
    },
    get builder(): Builder {
      if (builder === undefined) throw new Error("rebuild builder used outside its tests");
      return builder;
    },
    made,
  };
}
