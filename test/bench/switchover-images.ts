/**
 * The service every scenario replaces: busybox httpd (the demo base: busybox-static, nothing
 * pulled) serving one file that its start wrote, a fresh random token, on 127.0.0.1 at
 * SHADOWLAYER_PORT. Two images, `a` and `b`, differ only in a label, so "the new image" of a
 * replacement is a different image id, as it is for a rebuilt shadow. Names are this run's own.
 */
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { FIXED_BASE_IMAGE } from "../../cli/demo-images.js";
import { followEngine } from "../../common/engine-progress.js";
import { Code } from "../../common/errors.js";
import { SERVICE_PORT_ENV } from "../../agent/actions/switchover/service-labels.js";

/** Writes this start's token into the served file, then becomes httpd (SIGTERM ends it; PID 1 is the engine's init). */
export const TOKEN_HTTPD = `mkdir -p /tmp/w && cat /proc/sys/kernel/random/uuid > /tmp/w/index.html && exec busybox httpd -f -p 127.0.0.1:$${SERVICE_PORT_ENV} -h /tmp/w`;

export interface ServiceImages {
  /** Tags (repo:tag) and image ids of the two images. */
  tags: [string, string];
  ids: [string, string];
  remove(): Promise<void>;
}

async function build(docker: Docker, tag: string, mark: string): Promise<string> {
  const p = tar.pack();
  p.entry({ name: "Dockerfile" }, `FROM ${FIXED_BASE_IMAGE}\nLABEL org.shadowlayer.bench-switchover=${mark}\nCMD ["/bin/sh", "-c", ${JSON.stringify(TOKEN_HTTPD)}]\n`);
  p.finalize();
  const stream = await docker.buildImage(Readable.from(p as AsyncIterable<Buffer>), { t: tag, networkmode: "none", rm: true, forcerm: true });
  await followEngine(docker, stream, `build of ${tag}`, Code.Internal);
  return (await docker.getImage(tag).inspect()).Id;
}

/** Builds the two images (the demo images must exist: ensureDemoImages). */
export async function buildServiceImages(docker: Docker): Promise<ServiceImages> {
  const run = `${process.pid}-${randomBytes(3).toString("hex")}`;
  const tags: [string, string] = [`shadowlayer-test/switchover-bench:${run}-a`, `shadowlayer-test/switchover-bench:${run}-b`];
  const remove = async () => {
    for (const t of tags) await docker.getImage(t).remove({ force: true }).catch(() => undefined);
  };
  try {
    const ids: [string, string] = [await build(docker, tags[0], `${run}-a`), await build(docker, tags[1], `${run}-b`)];
    return { tags, ids, remove };
  } catch (err) {
    await remove();
    throw err;
  }
}
