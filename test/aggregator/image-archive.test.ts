/**
 * docker-archive tars in and out of a real engine: a saved image loads back under the same id,
 * a composed config makes a new image whose id is its digest, and hostile archives (a name
 * leaving the directory, an absolute name, a layer that does not match its diffID) are refused
 * with the entry or layer named.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import * as tar from "tar-stream";
import { loadImage, saveImage, unpackImageArchive } from "../../aggregator/rebuild/image-archive.js";
import { composeConfig, parseImageConfig } from "../../aggregator/rebuild/image-config.js";
import { testEngine, type TestEngine } from "../harness/engine.js";
import { tempDir } from "../harness/temp-dir.js";

function archive(entries: Array<{ name: string; data: Buffer }>): Readable {
  const p = tar.pack();
  for (const e of entries) p.entry({ name: e.name, mode: 0o644 }, e.data);
  p.finalize();
  return Readable.from(p as AsyncIterable<Buffer>);
}

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("image archive (docker save / docker load)", () => {
  const work = tempDir("sl-archive-");
  let eng: TestEngine;
  const made: string[] = [];

  before(async () => {
    eng = await testEngine();
  });
  after(async () => {
    for (const id of made) await eng.docker.getImage(id).remove({ force: true }).catch(() => undefined);
  });

  it("saves an image with its layers checked and loads it back under the same id", async () => {
    const info = (await eng.docker.getImage(eng.app).inspect()) as { Id: string; RootFS: { Layers: string[] } };
    const saved = await saveImage(eng.docker, eng.app, join(work.path, "app"));
    assert.equal(saved.configDigest, info.Id);
    assert.deepEqual(saved.layers.map((l) => l.diffId), info.RootFS.Layers);
    assert.ok(saved.layers.every((l) => l.size > 0 && existsSync(l.path)));
    assert.deepEqual(saved.repoTags, [eng.app]);
    assert.equal(await loadImage(eng.docker, saved), info.Id);
  });

  it("loads a composed config as a new image whose id is the config's digest", async () => {
    const saved = await saveImage(eng.docker, eng.base, join(work.path, "base"));
    const parsed = parseImageConfig(saved.config);
    const config = composeConfig(parsed, { diffIds: parsed.diffIds, labels: { "shadowlayer.test": "composed", "org.shadowlayer.recipe": null } });
    const tag = `shadowlayer-test/archive-${process.pid}:1`;
    const id = await loadImage(eng.docker, { config, layers: saved.layers }, tag);
    made.push(id);
    assert.equal(id, sha(config));
    const info = (await eng.docker.getImage(tag).inspect()) as { Id: string; Config: { Labels: Record<string, string> } };
    assert.equal(info.Id, id);
    assert.equal(info.Config.Labels["shadowlayer.test"], "composed");
    assert.equal(info.Config.Labels["org.shadowlayer.recipe"], undefined);
  });

  it("refuses an archive entry that leaves the directory, or is absolute, and writes nothing outside", async () => {
    for (const name of ["../escape.json", "a/../../escape.json", "/etc/escape.json"]) {
      const dir = join(work.path, `hostile-${made.length}-${name.length}`);
      await assert.rejects(unpackImageArchive(archive([{ name, data: Buffer.from("{}") }]), dir, "hostile"), (err: Error) => {
        assert.match(err.message, /leaves the archive|absolute/);
        assert.ok(err.message.includes(JSON.stringify(name)));
        return true;
      });
      assert.equal(existsSync(join(work.path, "escape.json")), false);
      assert.deepEqual(await readdir(dir), []);
    }
  });

  it("names the layer whose tar does not match its diffID", async () => {
    const good = Buffer.alloc(1024, 1);
    const bad = Buffer.alloc(1024, 2);
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [sha(good), sha(good.subarray(0, 512))] } }));
    const entries = [
      { name: "l0/layer.tar", data: good },
      { name: "l1/layer.tar", data: bad },
      { name: "c.json", data: config },
      { name: "manifest.json", data: Buffer.from(JSON.stringify([{ Config: "c.json", RepoTags: null, Layers: ["l0/layer.tar", "l1/layer.tar"] }])) },
    ];
    await assert.rejects(unpackImageArchive(archive(entries), join(work.path, "mismatch"), "forged"), (err: Error) => {
      assert.match(err.message, new RegExp(`layer 1 \\(${sha(good.subarray(0, 512))}\\) of forged does not match its diffID: the saved tar hashes to ${sha(bad)}`));
      return true;
    });
  });

  it("caps the metadata it reads whole", async () => {
    await assert.rejects(
      unpackImageArchive(archive([{ name: "manifest.json", data: Buffer.alloc(2 * 1024 * 1024, 0x20) }]), join(work.path, "big"), "big"),
      /manifest\.json is larger than/,
    );
  });
});
