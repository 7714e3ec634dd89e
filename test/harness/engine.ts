/**
 * Test access to the real Docker engine that test/harness/docker-host.sh started: the demo images
 * built once, containers labelled so every one a test starts is removed again.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { connectEngine, type EngineInfo } from "../../common/engine.js";
import { DEMO_LABEL, ensureDemoImages } from "../../cli/demo-images.js";

export const execFileP = promisify(execFile);
export const TEST_LABEL = "org.shadowlayer.test";

export interface TestEngine {
  docker: Docker;
  info: EngineInfo;
  base: string;
  app: string;
}

let cached: Promise<TestEngine> | undefined;

export function testEngine(): Promise<TestEngine> {
  cached ??= (async () => {
    const { docker, info } = await connectEngine(process.env["SHADOWLAYER_DOCKER_SOCKET"] ?? "/var/run/docker.sock");
    const images = await ensureDemoImages(docker);
    return { docker, info, base: images.base, app: images.app };
  })();
  return cached;
}

/** Starts a host-network container labelled for cleanup. */
export async function runContainer(
  docker: Docker,
  image: string,
  cmd: string[],
  extra: { name?: string; binds?: string[]; labels?: Record<string, string> } = {},
): Promise<Docker.Container> {
  const c = await docker.createContainer({
    Image: image,
    Cmd: cmd,
    ...(extra.name !== undefined ? { name: extra.name } : {}),
    Labels: { ...extra.labels, [TEST_LABEL]: String(process.pid), [DEMO_LABEL]: "test" },
    HostConfig: { NetworkMode: "host", ...(extra.binds ? { Binds: extra.binds } : {}) },
  });
  await c.start();
  return c;
}

/** Runs a command in a container without waiting for it (the process keeps running). */
export async function execDetached(c: Docker.Container, cmd: string[]): Promise<void> {
  const ex = await c.exec({ Cmd: cmd, AttachStdout: false, AttachStderr: false });
  await ex.start({ Detach: true });
}

/** Removes every container this test process started. */
export async function cleanupContainers(docker: Docker): Promise<void> {
  const list = await docker.listContainers({ all: true, filters: { label: [`${TEST_LABEL}=${process.pid}`] } });
  await Promise.all(list.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
