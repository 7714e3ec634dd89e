/**
 * End to end, on a real Debian: a debootstrapped bookworm (minbase) whose perl-base is
 * 5.36.0-7+deb12u3, a loopback apt mirror holding the real perl-base 5.36.0-7+deb12u4 from
 * bookworm-security (DLA-4821-1, CVE-2026-8376), and the `patch` strategy on the local engine.
 * Not part of `npm test` (debootstrap and a download on the first run): `npm run e2e:patch`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { Code, ShadowError } from "../../common/errors.js";
import { connectEngine } from "../../common/engine.js";
import { parseOsvRecord, type OsvAffected } from "../../aggregator/feeds/parse/osv.js";
import { compileAffected, isAffected } from "../../aggregator/vulns/osv-eval.js";
import { dpkgScheme } from "../../aggregator/vulns/versions/index.js";
import { patchHelperPrefix, patchRefusal, patchStrategy } from "../../aggregator/rebuild/strategies/patch.js";
import { SHADOW_LABELS, type Builder, type ImageFacts, type StrategyContext, type VulnerablePackage } from "../../aggregator/rebuild/types.js";
import { downloadDebs, startPackageMirror, type PackageMirror } from "../harness/package-mirror.js";
import { tempDir } from "../harness/temp-dir.js";

const execFileP = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CACHE = process.env["SHADOWLAYER_E2E_CACHE"] ?? "/var/cache/shadowlayer-e2e";
const SOURCE_TAG = "shadowlayer-e2e/bookworm:minbase";
const HELPER_LABEL = "shadowlayer.rebuild-helper";

/** The fixture's fixed version of perl in Debian 12, read through the feed parser. */
async function advisory(): Promise<{ id: string; source: string; fixed: string; affected: OsvAffected }> {
  const json: unknown = JSON.parse(await readFile(join(ROOT, "test/fixtures/feeds/osv-dir-patch/debian/DEBIAN-CVE-2026-8376.json"), "utf8"));
  const item = parseOsvRecord(json);
  assert.ok(item.ok);
  const affected = item.record.affected.find((a) => a.ecosystem === "Debian:12");
  const fixed = affected?.ranges.flatMap((r) => r.events).find((e) => e.fixed !== undefined)?.fixed;
  assert.ok(affected !== undefined && fixed !== undefined);
  return { id: item.record.aliases[0] ?? item.record.id, source: affected.name, fixed, affected };
}

async function factsOf(docker: Docker, image: string): Promise<ImageFacts> {
  const i = await docker.getImage(image).inspect();
  return {
    imageId: i.Id,
    name: i.RepoTags?.[0] ?? i.Id,
    labels: i.Config.Labels ?? {},
    diffIds: i.RootFS.Layers ?? [],
    history: [],
    repoDigests: i.RepoDigests ?? [],
    os: i.Os,
    architecture: i.Architecture,
  };
}

/** Output of a command in a throwaway container from `image` (no network). */
async function inImage(image: string, argv: string[]): Promise<string> {
  const { stdout } = await execFileP("docker", ["run", "--rm", "--network", "none", "--entrypoint", argv[0] ?? "", image, ...argv.slice(1)]);
  return stdout;
}

async function helpersLeft(docker: Docker, jobId: string): Promise<number> {
  const containers = await docker.listContainers({ all: true, filters: { name: [patchHelperPrefix(jobId)] } });
  const volumes = await docker.listVolumes({ filters: { label: [`${HELPER_LABEL}=${jobId}`] } });
  return containers.length + (volumes.Volumes ?? []).length;
}

describe("patch strategy on a debootstrapped Debian bookworm", { timeout: 1_800_000 }, () => {
  const work = tempDir("sl-e2e-patch-");
  let docker: Docker;
  let builder: Builder;
  let facts: ImageFacts;
  let mirror: PackageMirror;
  let adv: Awaited<ReturnType<typeof advisory>>;
  const made: string[] = [];
  let jobs = 0;

  before(async () => {
    const started = Date.now();
    ({ docker } = await connectEngine("/var/run/docker.sock"));
    await execFileP("bash", [join(ROOT, "test/harness/debian-rootfs.sh"), SOURCE_TAG], { maxBuffer: 64 * 1024 * 1024 });
    facts = await factsOf(docker, SOURCE_TAG);
    adv = await advisory();
    const debs = await downloadDebs([`perl-base=${adv.fixed}`], join(CACHE, "debs"));
    mirror = await startPackageMirror(join(work.path, "mirror"), debs);
    builder = { name: "local", docker, limits: { cpusetCpus: "1", cpuPeriod: 100_000, cpuQuota: 100_000, cpuShares: 512, memoryBytes: 512 * 1024 * 1024 } };
    console.log(`# setup (rootfs, image, .deb, mirror): ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  after(async () => {
    await mirror?.close();
    for (const id of made) await docker.getImage(id).remove({ force: true }).catch(() => undefined);
  });

  function context(vulnerable: VulnerablePackage[], extra: Partial<StrategyContext> = {}): StrategyContext & { lines: string[] } {
    const lines: string[] = [];
    return {
      jobId: `e2e-patch-${process.pid}-${++jobs}`,
      facts,
      reasons: [adv.id],
      sourceLayer: facts.diffIds[0] ?? "",
      vulnerable,
      builder,
      labels: { [SHADOW_LABELS.strategy]: "patch", [SHADOW_LABELS.reason]: adv.id, [SHADOW_LABELS.sourceImage]: facts.imageId },
      baseMap: {},
      packageMirror: mirror.url,
      workDir: work.path,
      log: (line) => lines.push(line),
      step: (_name, fn) => fn(),
      signal: new AbortController().signal,
      lines,
      ...extra,
    };
  }

  function perl(fixed: string, name = "perl-base"): VulnerablePackage {
    return { name, sourceName: adv.source, installedVersion: "5.36.0-7+deb12u3", fixedVersion: fixed, type: "deb", layerId: facts.diffIds[0] ?? "", advisory: adv.id };
  }

  it("the source image has the vulnerable perl-base", async () => {
    assert.equal(await inImage(SOURCE_TAG, ["dpkg-query", "-W", "-f=${Version}", "perl-base"]), "5.36.0-7+deb12u3");
  });

  it("applies only with a package mirror, and says why not", () => {
    assert.equal(patchStrategy.applies(facts, [adv.id], { baseMap: {} }), undefined);
    assert.equal(patchRefusal(facts, [adv.id], {}), "no package mirror is configured");
    assert.match(patchStrategy.applies(facts, [adv.id], { baseMap: {}, packageMirror: mirror.url }) ?? "", /mirror/);
    assert.match(patchRefusal(facts, ["drift"], { packageMirror: mirror.url }) ?? "", /no advisory/);
  });

  it("adds exactly one layer upgrading perl-base to the fixed version, from the loopback mirror only", async () => {
    const started = Date.now();
    const steps: string[] = [];
    let helperHost: Docker.HostConfig | undefined;
    const ctx = context([perl(adv.fixed)], {
      step: async (name, fn) => {
        steps.push(name);
        if (name === "verify") {
          const [c] = await docker.listContainers({ all: true, filters: { name: [patchHelperPrefix(ctx.jobId)] } });
          if (c !== undefined) helperHost = (await docker.getContainer(c.Id).inspect()).HostConfig;
        }
        const t0 = Date.now();
        const out = await fn();
        console.log(`# step ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        return out;
      },
    });
    const result = await patchStrategy.run(ctx);
    made.push(result.imageId);
    console.log(`# patch run: ${((Date.now() - started) / 1000).toFixed(1)} s`);

    assert.deepEqual(steps, ["packages", "apt-get update", "apt-get install", "verify", "commit"]);
    assert.equal(result.layerIds.length, facts.diffIds.length + 1);
    assert.deepEqual(result.layerIds.slice(0, facts.diffIds.length), facts.diffIds);
    assert.equal(result.layersReused, facts.diffIds.length);

    const shadow = await docker.getImage(result.imageId).inspect();
    const source = await docker.getImage(facts.imageId).inspect();
    assert.deepEqual(shadow.RootFS.Layers, result.layerIds);
    assert.equal(shadow.Config.Labels?.[SHADOW_LABELS.strategy], "patch");
    assert.equal(shadow.Config.Labels?.[SHADOW_LABELS.reason], adv.id);
    assert.equal(shadow.Config.Labels?.[SHADOW_LABELS.sourceImage], facts.imageId);
    assert.equal(shadow.Config.Labels?.[HELPER_LABEL], undefined);
    assert.ok(source.Config.Labels?.["org.shadowlayer.test.rootfs"] !== undefined);
    assert.equal(shadow.Config.Labels?.["org.shadowlayer.test.rootfs"], source.Config.Labels?.["org.shadowlayer.test.rootfs"]);
    assert.deepEqual(shadow.Config.Cmd, source.Config.Cmd);
    assert.deepEqual(shadow.Config.Entrypoint ?? [], source.Config.Entrypoint ?? []);
    assert.deepEqual(shadow.Config.Env, source.Config.Env);
    assert.equal(shadow.Config.WorkingDir, source.Config.WorkingDir);
    assert.equal(shadow.Config.User, source.Config.User);

    const before = await inImage(SOURCE_TAG, ["dpkg-query", "-W", "-f=${Source} ${Version}", "perl-base"]);
    const after = await inImage(result.imageId, ["dpkg-query", "-W", "-f=${Source} ${Version}", "perl-base"]);
    assert.equal(after, `perl ${adv.fixed}`);
    // The advisory, evaluated as the matcher does, holds for the source's perl and not for the shadow's.
    const { compiled } = compileAffected(adv.affected, dpkgScheme);
    assert.equal(isAffected(compiled, before.split(" ")[1] ?? ""), true);
    assert.equal(isAffected(compiled, after.split(" ")[1] ?? ""), false);
    // The mirror's sources, lists and downloads lived in the scratch volume, not in the layer.
    assert.equal(await inImage(result.imageId, ["cat", "/etc/apt/sources.list"]), await inImage(SOURCE_TAG, ["cat", "/etc/apt/sources.list"]));
    const aptDirs = ["find", "/var/cache/apt", "/var/lib/apt/lists"];
    assert.equal(await inImage(result.imageId, aptDirs), await inImage(SOURCE_TAG, aptDirs));

    // apt fetched the index and the fixed .deb from the loopback mirror.
    assert.ok(mirror.requests.some((p) => /Packages/.test(p)), mirror.requests.join(" "));
    assert.ok(mirror.requests.some((p) => p.endsWith(`perl-base_${adv.fixed}_amd64.deb`)), mirror.requests.join(" "));
    assert.ok(ctx.lines.some((l) => /Unpacking perl-base/.test(l)), ctx.lines.slice(-20).join("\n"));

    assert.ok(helperHost !== undefined);
    assert.equal(helperHost.NetworkMode, "host");
    assert.equal(helperHost.CpusetCpus, "1");
    assert.equal(helperHost.CpuQuota, 100_000);
    assert.equal(helperHost.CpuPeriod, 100_000);
    assert.equal(helperHost.CpuShares, 512);
    assert.equal(helperHost.Memory, 512 * 1024 * 1024);
    assert.equal(await helpersLeft(docker, ctx.jobId), 0);
  });

  it("refuses hostile package names and versions before anything runs", async () => {
    const untouchable = new Proxy({} as Docker, {
      get() {
        throw new Error("the engine was used");
      },
    });
    const hostile: Array<Partial<VulnerablePackage>> = [
      { name: "perl-base$(touch /tmp/pwned)" },
      { name: "perl base" },
      { name: "perl'base" },
      { name: "perl\nbase" },
      { name: "-oAPT::Get::Whatever=1" },
      { sourceName: "perl;reboot" },
      { fixedVersion: "5.36.0-7+deb12u4 other-package" },
      { fixedVersion: "`id`" },
    ];
    for (const h of hostile) {
      const ctx = context([{ ...perl(adv.fixed), ...h }], { builder: { ...builder, docker: untouchable } });
      await assert.rejects(patchStrategy.run(ctx), (err: unknown) => err instanceof ShadowError && err.code === Code.InvalidArgument, JSON.stringify(h));
    }
  });

  it("fails with BuildFailed and apt's own words when the mirror lacks the fixed version", async () => {
    const ctx = context([perl("5.36.0-7+deb12u9")]);
    await assert.rejects(patchStrategy.run(ctx), (err: unknown) => {
      assert.ok(err instanceof ShadowError && err.code === Code.BuildFailed, String(err));
      assert.match(err.message, /apt-get install exited with 100/);
      assert.match(err.message, /5\.36\.0-7\+deb12u9/);
      return true;
    });
    assert.equal(await helpersLeft(docker, ctx.jobId), 0);
  });

  it("stops and removes its helpers when the job is cancelled", async () => {
    const abort = new AbortController();
    const ctx = context([perl(adv.fixed)], {
      signal: abort.signal,
      step: async (name, fn) => {
        if (name === "apt-get install") setTimeout(() => abort.abort(), 200);
        return fn();
      },
    });
    await assert.rejects(patchStrategy.run(ctx), (err: unknown) => err instanceof ShadowError && err.code === Code.Cancelled);
    assert.equal(await helpersLeft(docker, ctx.jobId), 0);
  });
});
