/**
 * `patch`, as Copacetic does it: the source image plus exactly one layer in which the image's
 * own package manager upgrades the vulnerable OS packages to their fixed versions, fetched from
 * the configured package mirror only. Everything runs in helper containers on the builder (host
 * network, so a loopback mirror answers; the builder's cgroup limits), each command an argv
 * array; the last helper is committed with the source's configuration and the shadow's labels.
 */
import { PassThrough, type Readable } from "node:stream";
import { randomBytes } from "node:crypto";
import type Docker from "dockerode";
import * as tar from "tar-stream";
import { Code, ShadowError } from "../../../common/errors.js";
import {
  APT_SCRATCH,
  apkUpgradeArgv,
  aptInstallArgv,
  aptScratchEntries,
  aptUpdateArgv,
  checkMirrorUrl,
  checkVulnerablePackage,
  planUpgrade,
  readApkInstalled,
  readDpkgStatus,
  unpatched,
  type InstalledDatabase,
  type PackageFamily,
  type UpgradeTarget,
} from "../package-commands.js";
import type { Builder, ImageFacts, Strategy, StrategyContext, StrategyResult, VulnerablePackage } from "../types.js";

/** Reasons that are not advisories: a package upgrade does nothing for them. */
const NOT_ADVISORIES = new Set(["drift", "performance-anomaly"]);
/** Lines of helper output kept for a failure's message. */
const TAIL_LINES = 30;
/** Output without a newline is cut into lines of this many characters. */
const MAX_LINE = 4096;
/** An installed-package database bigger than this is not read (a real one is a few MiB). */
const MAX_DATABASE_BYTES = 64 * 1024 * 1024;
/** Marks helper volumes, so an operator can tell what left them (containers carry it in their name: a label would be committed). */
const HELPER_LABEL = "shadowlayer.rebuild-helper";

/** The name prefix of a job's helper containers. */
export function patchHelperPrefix(jobId: string): string {
  return `shadowlayer-patch-${jobId.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 80)}-`;
}

const DATABASE: Record<PackageFamily, { path: string; read: (text: string) => InstalledDatabase }> = {
  deb: { path: "/var/lib/dpkg/status", read: readDpkgStatus },
  apk: { path: "/lib/apk/db/installed", read: readApkInstalled },
};

/** Why `patch` cannot rebuild this image for these reasons, or undefined when it can. */
export function patchRefusal(facts: ImageFacts, reasons: readonly string[], ctx: { packageMirror?: string }): string | undefined {
  if (ctx.packageMirror === undefined || ctx.packageMirror === "") return "no package mirror is configured";
  const bad = checkMirrorUrl(ctx.packageMirror);
  if (bad !== undefined) return bad;
  if (facts.os !== "" && facts.os !== "linux") return `the image is ${facts.os}, not linux`;
  if (!reasons.some((r) => !NOT_ADVISORIES.has(r))) return "no advisory among the reasons (a package upgrade does not answer drift or anomalies)";
  return undefined;
}

/** The OS package family of the job's vulnerable packages; refuses hostile names and versions before anything runs. */
function packagesToPatch(vulnerable: readonly VulnerablePackage[], log: (line: string) => void): { family: PackageFamily; packages: VulnerablePackage[] } {
  const os = vulnerable.filter((p) => p.type === "deb" || p.type === "apk");
  for (const p of vulnerable) if (!os.includes(p)) log(`patch: skipping ${p.type} package ${JSON.stringify(p.name.slice(0, 80))} (not an OS package)`);
  for (const p of os) {
    const why = checkVulnerablePackage(p);
    if (why !== undefined) throw new ShadowError(Code.InvalidArgument, `patch refused: ${why}`);
  }
  const first = os[0];
  if (first === undefined) throw new ShadowError(Code.FailedPrecondition, "patch: no vulnerable OS package (deb or apk) to upgrade");
  const family = first.type as PackageFamily;
  if (os.some((p) => p.type !== family)) throw new ShadowError(Code.FailedPrecondition, "patch: the vulnerable packages mix deb and apk");
  return { family, packages: os };
}

function hostConfig(builder: Builder, mounts: Docker.MountSettings[]): Docker.HostConfig {
  const l = builder.limits;
  return {
    NetworkMode: "host",
    Mounts: mounts,
    ...(l.cpusetCpus !== undefined ? { CpusetCpus: l.cpusetCpus } : {}),
    ...(l.cpuQuota !== undefined ? { CpuQuota: l.cpuQuota } : {}),
    ...(l.cpuPeriod !== undefined ? { CpuPeriod: l.cpuPeriod } : {}),
    ...(l.cpuShares !== undefined ? { CpuShares: l.cpuShares } : {}),
    ...(l.memoryBytes !== undefined ? { Memory: l.memoryBytes } : {}),
  };
}

/** The bytes of one file read out of a container's filesystem (created or stopped; nothing runs). */
async function readContainerFile(container: Docker.Container, path: string): Promise<string> {
  const archive = (await container.getArchive({ path })) as unknown as Readable;
  const extract = tar.extract();
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    extract.on("entry", (header, stream, next) => {
      stream.on("data", (c: unknown) => {
        const bytes = c as Buffer;
        size += bytes.length;
        if (header.type === "file" && size <= MAX_DATABASE_BYTES) chunks.push(bytes);
      });
      stream.on("end", next);
      stream.on("error", reject);
    });
    extract.on("finish", resolve);
    extract.on("error", reject);
    archive.on("error", reject);
    archive.pipe(extract);
  });
  if (size > MAX_DATABASE_BYTES) throw new ShadowError(Code.BuildFailed, `${path} is over ${MAX_DATABASE_BYTES} bytes`);
  return Buffer.concat(chunks).toString("utf8");
}

/** The scratch volume's initial content (apt's own sources, lists and archive directories) as a tar. */
async function scratchTar(mirror: string): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of aptScratchEntries(mirror)) {
    if (e.content === undefined) pack.entry({ name: e.path, type: "directory", mode: 0o755 });
    else pack.entry({ name: e.path, mode: 0o644 }, e.content);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** Splits a byte stream into lines for `log`, keeping the last TAIL_LINES. */
function lineSink(log: (line: string) => void, tail: string[]): PassThrough {
  const sink = new PassThrough();
  let rest = "";
  const emit = (line: string): void => {
    // Terminal escapes and other control characters from the image stay out of the job's log.
    const clean = line.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "").trimEnd();
    if (clean === "") return;
    log(clean);
    tail.push(clean);
    if (tail.length > TAIL_LINES) tail.shift();
  };
  sink.on("data", (c: Buffer) => {
    const lines = (rest + c.toString("utf8")).split(/\r?\n|\r/);
    rest = lines.pop() ?? "";
    if (rest.length > MAX_LINE) {
      lines.push(rest.slice(0, MAX_LINE));
      rest = "";
    }
    lines.forEach(emit);
  });
  sink.on("end", () => emit(rest));
  return sink;
}

/** Containers and volumes made for one job: all removed at the end, whatever happened. */
class Helpers {
  private readonly containers: Docker.Container[] = [];
  private readonly volumes: string[] = [];
  constructor(private readonly docker: Docker) {}

  async container(options: Docker.ContainerCreateOptions): Promise<Docker.Container> {
    const c = await this.docker.createContainer(options);
    this.containers.push(c);
    return c;
  }

  async volume(name: string, labels: Record<string, string>): Promise<string> {
    await this.docker.createVolume({ Name: name, Labels: labels });
    this.volumes.push(name);
    return name;
  }

  async kill(): Promise<void> {
    await Promise.all(this.containers.map((c) => c.kill().catch(() => undefined)));
  }

  async removeAll(): Promise<void> {
    await Promise.all(this.containers.splice(0).map((c) => c.remove({ force: true, v: true }).catch(() => undefined)));
    await Promise.all(this.volumes.splice(0).map((v) => this.docker.getVolume(v).remove().catch(() => undefined)));
  }
}

/** Runs a created container to its end, its output streamed to `log`; a non-zero exit is BuildFailed with the tail. */
async function runToEnd(container: Docker.Container, what: string, ctx: StrategyContext): Promise<void> {
  const tail: string[] = [];
  const stream = (await container.attach({ stream: true, stdout: true, stderr: true, logs: true })) as unknown as Readable;
  const out = lineSink(ctx.log, tail);
  ctx.builder.docker.modem.demuxStream(stream, out, out);
  const ended = new Promise<void>((resolve) => {
    stream.on("end", resolve);
    stream.on("close", resolve);
  });
  ctx.signal.throwIfAborted();
  await container.start();
  const result = (await container.wait()) as { StatusCode?: number };
  // The output stream ends just after the exit; do not wait forever on an engine that keeps it open.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([ended, new Promise((r) => (timer = setTimeout(r, 2000)))]);
  clearTimeout(timer);
  stream.destroy();
  out.end();
  ctx.signal.throwIfAborted();
  if (result.StatusCode !== 0) {
    throw new ShadowError(Code.BuildFailed, `patch: ${what} exited with ${String(result.StatusCode)}:\n${tail.join("\n")}`);
  }
}

/**
 * A helper container from the source image. Nothing of its own goes into its config but the
 * argv and the root user (only when the image names another): the engine's commit fills
 * whatever the given config leaves empty from the container's, so the helper must not differ
 * from the source there. The package manager's environment is set by `env` inside the argv.
 */
function helperOptions(source: Docker.ImageInspectInfo, argv: string[], ctx: StrategyContext, mounts: Docker.MountSettings[]): Docker.ContainerCreateOptions {
  const [first = "/nonexistent", ...rest] = argv;
  return {
    name: `${patchHelperPrefix(ctx.jobId)}${randomBytes(4).toString("hex")}`,
    Image: source.Id,
    Entrypoint: [first],
    Cmd: rest,
    ...(source.Config.User !== "" ? { User: "0:0" } : {}),
    HostConfig: hostConfig(ctx.builder, mounts),
  };
}

/** The committed image's config: the source's, with the shadow's labels added. */
function commitConfig(source: Docker.ImageInspectInfo, labels: Record<string, string>): Record<string, unknown> {
  const c = source.Config;
  return {
    ...c,
    Labels: { ...(c.Labels ?? {}), ...labels },
    // Explicitly empty, or the engine takes the helper's argv.
    Entrypoint: c.Entrypoint ?? [],
    Cmd: c.Cmd ?? [],
  };
}

/** What of the shadow's config differs from the source's (plus the labels), if anything. */
function configDrift(source: Docker.ImageInspectInfo, shadow: Docker.ImageInspectInfo, labels: Record<string, string>): string[] {
  const norm = (v: unknown): string => JSON.stringify(Array.isArray(v) && v.length === 0 ? null : (v ?? null));
  const s = source.Config;
  const d = shadow.Config;
  const fields: Array<[string, unknown, unknown]> = [
    ["Cmd", s.Cmd, d.Cmd],
    ["Entrypoint", s.Entrypoint, d.Entrypoint],
    ["Env", s.Env, d.Env],
    ["WorkingDir", s.WorkingDir || null, d.WorkingDir || null],
    ["User", s.User || null, d.User || null],
    ["Labels", Object.entries({ ...(s.Labels ?? {}), ...labels }).sort(), Object.entries(d.Labels ?? {}).sort()],
  ];
  return fields.filter(([, a, b]) => norm(a) !== norm(b)).map(([name, a, b]) => `${name} ${norm(a)} became ${norm(b)}`);
}

async function patch(ctx: StrategyContext): Promise<StrategyResult> {
  const refusal = patchRefusal(ctx.facts, ctx.reasons, ctx.packageMirror === undefined ? {} : { packageMirror: ctx.packageMirror });
  if (refusal !== undefined) throw new ShadowError(Code.FailedPrecondition, `patch: ${refusal}`);
  const mirror = ctx.packageMirror ?? "";
  const { family, packages } = packagesToPatch(ctx.vulnerable, ctx.log);
  if (ctx.signal.aborted) throw new ShadowError(Code.Cancelled, "patch: cancelled");

  const docker = ctx.builder.docker;
  const helpers = new Helpers(docker);
  const onAbort = (): void => void helpers.kill();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    const source = await docker.getImage(ctx.facts.imageId).inspect();
    const db = DATABASE[family];

    const targets = await ctx.step("packages", async (): Promise<UpgradeTarget[]> => {
      const probe = await helpers.container(helperOptions(source, ["/nonexistent"], ctx, []));
      const installed = db.read(await readContainerFile(probe, db.path));
      for (const why of installed.refused) ctx.log(`patch: ignoring a package database entry: ${why}`);
      const plan = planUpgrade(family, installed.packages, packages);
      if (typeof plan === "string") throw new ShadowError(Code.FailedPrecondition, `patch: ${plan}`);
      if (plan.length === 0) throw new ShadowError(Code.FailedPrecondition, "patch: every vulnerable package is already at its fixed version");
      ctx.log(`patch: upgrading ${plan.map((t) => `${t.name} -> ${t.fixedVersion} (${t.advisory})`).join(", ")}`);
      return plan;
    });

    let last: Docker.Container;
    if (family === "deb") {
      const volume = await helpers.volume(`shadowlayer-patch-${randomBytes(6).toString("hex")}`, { [HELPER_LABEL]: ctx.jobId });
      const mounts: Docker.MountSettings[] = [{ Type: "volume", Source: volume, Target: APT_SCRATCH, VolumeOptions: { NoCopy: true } as Docker.MountSettings["VolumeOptions"] }];
      await ctx.step("apt-get update", async () => {
        const update = await helpers.container(helperOptions(source, aptUpdateArgv(), ctx, mounts));
        await update.putArchive(await scratchTar(mirror), { path: APT_SCRATCH });
        await runToEnd(update, "apt-get update", ctx);
      });
      last = await ctx.step("apt-get install", async () => {
        const install = await helpers.container(helperOptions(source, aptInstallArgv(targets), ctx, mounts));
        await runToEnd(install, "apt-get install", ctx);
        return install;
      });
    } else {
      last = await ctx.step("apk upgrade", async () => {
        const upgrade = await helpers.container(helperOptions(source, apkUpgradeArgv(mirror, targets), ctx, []));
        await runToEnd(upgrade, "apk upgrade", ctx);
        return upgrade;
      });
    }

    await ctx.step("verify", async () => {
      const after = db.read(await readContainerFile(last, db.path));
      const left = unpatched(family, after.packages, targets);
      if (left.length > 0) throw new ShadowError(Code.BuildFailed, `patch: packages not upgraded: ${left.join("; ")}`);
    });

    const imageId = await ctx.step("commit", async () => {
      ctx.signal.throwIfAborted();
      const committed = (await last.commit({
        _query: { container: last.id, comment: `shadowlayer patch: ${targets.map((t) => `${t.name}=${t.fixedVersion}`).join(" ")}`, pause: false },
        _body: commitConfig(source, ctx.labels),
      })) as { Id?: string };
      if (committed.Id === undefined) throw new ShadowError(Code.BuildFailed, "patch: the engine's commit returned no image id");
      return committed.Id;
    });

    const shadow = await docker.getImage(imageId).inspect();
    const layerIds = shadow.RootFS.Layers ?? [];
    const sourceLayers = source.RootFS.Layers ?? [];
    const wrong = configDrift(source, shadow, ctx.labels);
    if (layerIds.length !== sourceLayers.length + 1 || sourceLayers.some((d, i) => layerIds[i] !== d)) {
      wrong.push(`the commit did not add exactly one layer on the source's ${sourceLayers.length}`);
    }
    if (wrong.length > 0) {
      await docker.getImage(imageId).remove({ force: true }).catch(() => undefined);
      throw new ShadowError(Code.BuildFailed, `patch: the committed image is not the source plus one layer: ${wrong.join("; ")}`);
    }
    return {
      imageId,
      layerIds,
      layersReused: sourceLayers.length,
      detail: `${targets.length} package(s) upgraded in one layer: ${targets.map((t) => `${t.name} ${t.fixedVersion}`).join(", ")}`,
    };
  } catch (err) {
    if (ctx.signal.aborted) throw new ShadowError(Code.Cancelled, "patch: cancelled", { cause: err });
    throw ShadowError.from(err, Code.BuildFailed);
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    await helpers.removeAll();
  }
}

/** The `patch` strategy (Copacetic-style: one added layer of package upgrades). */
export const patchStrategy: Strategy = {
  name: "patch",
  applies(facts, reasons, ctx) {
    return patchRefusal(facts, reasons, ctx) === undefined ? `OS packages upgraded in one layer from the mirror ${ctx.packageMirror ?? ""}` : undefined;
  },
  refusal: patchRefusal,
  run: patch,
};
