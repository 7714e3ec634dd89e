/**
 * Shadow garbage collection: per source image the newest N usable shadows stay, older ones and
 * failed ones go; a local shadow is removed from the builder's engine (a real one here) unless a
 * container still uses it, in which case it waits for a later round.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type Docker from "dockerode";
import { RebuildJobSchema, RebuildState, ShadowSchema, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import { silentLogger } from "../../common/log.js";
import { ShadowGc, shadowsToCollect } from "../../aggregator/rebuild/shadow-gc.js";
import { BASE_IMAGE, ensureDemoImages } from "../../cli/demo-images.js";
import { testEngine } from "../harness/engine.js";

function job(id: string, image: string, state: RebuildState, builtAt: number, shadowImage = `sha256:${id.padEnd(64, "0")}`): RebuildJob {
  return create(RebuildJobSchema, {
    id,
    imageId: image,
    state,
    builder: "local",
    shadow: create(ShadowSchema, { imageId: shadowImage, reference: shadowImage, localOnly: true, builtAt: timestampFromDate(new Date(builtAt)) }),
  });
}

describe("shadow garbage collection", () => {
  it("keeps the newest N usable shadows per image and collects older and failed ones", () => {
    const jobs = [
      job("a1", "img-a", RebuildState.SUPERSEDED, 1_000),
      job("a2", "img-a", RebuildState.SUPERSEDED, 2_000),
      job("a3", "img-a", RebuildState.READY, 3_000),
      job("a4", "img-a", RebuildState.FAILED, 4_000),
      job("b1", "img-b", RebuildState.READY, 1_000),
      create(RebuildJobSchema, { id: "q1", imageId: "img-a", state: RebuildState.QUEUED }),
    ];
    assert.deepEqual(shadowsToCollect(jobs, 2).map((j) => j.id).sort(), ["a1", "a4"]);
    assert.deepEqual(shadowsToCollect(jobs, 1).map((j) => j.id).sort(), ["a1", "a2", "a4"]);
    // One already collected (reference cleared) is not counted or collected again.
    const collected = jobs.map((j) => {
      const c = clone(RebuildJobSchema, j);
      if (c.id === "a2" && c.shadow !== undefined) c.shadow.reference = "";
      return c;
    });
    assert.deepEqual(shadowsToCollect(collected, 1).map((j) => j.id).sort(), ["a1", "a4"]);
  });

  describe("in the builder's engine", () => {
    let docker: Docker;
    let dir: string;
    const tags = [`shadowlayer/shadow:gc-test-${process.pid}-old`, `shadowlayer/shadow:gc-test-${process.pid}-new`];
    const ids: string[] = [];
    let user: Docker.Container | undefined;

    before(async () => {
      docker = (await testEngine()).docker;
      await ensureDemoImages(docker);
      dir = await mkdtemp(join(tmpdir(), "sl-gc-"));
      for (const [i, t] of tags.entries()) {
        await writeFile(join(dir, "Dockerfile"), `FROM ${BASE_IMAGE}\nLABEL gc-test=${process.pid}-${i}\n`);
        const s = await docker.buildImage({ context: dir, src: ["Dockerfile"] }, { t, networkmode: "host" });
        await new Promise<void>((resolve, reject) => docker.modem.followProgress(s, (err: Error | null) => (err ? reject(err) : resolve())));
        ids.push(((await docker.getImage(t).inspect()) as { Id: string }).Id);
      }
    });

    after(async () => {
      await user?.remove({ force: true }).catch(() => undefined);
      for (const t of [...tags, ...ids]) await docker.getImage(t).remove({ force: true }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    });

    it("removes the old shadow's image, and waits while a container uses it", async () => {
      const jobs = [job("old", "img-gc", RebuildState.SUPERSEDED, 1_000, ids[0]), job("new", "img-gc", RebuildState.READY, 2_000, ids[1])];
      const notes: Array<[string, string]> = [];
      const gc = new ShadowGc(
        {
          all: () => jobs,
          noteCollected: async (id, note) => {
            notes.push([id, note]);
            const j = jobs.find((x) => x.id === id);
            if (j?.shadow !== undefined) j.shadow.reference = "";
          },
        },
        { keep: 1, engines: (name) => (name === "local" ? docker : undefined), log: silentLogger() },
      );
      // A prepared shadow container still uses the old image: nothing is removed yet.
      user = await docker.createContainer({ Image: ids[0], Cmd: ["/bin/true"], HostConfig: { NetworkMode: "none" } });
      await gc.collect();
      assert.deepEqual(notes, []);
      assert.ok(await docker.getImage(ids[0] ?? "").inspect());
      await user.remove({ force: true });
      user = undefined;
      await gc.collect();
      assert.equal(notes.length, 1);
      assert.equal(notes[0]?.[0], "old");
      assert.match(notes[0]?.[1] ?? "", /removed sha256:[0-9a-f]{12} from local's engine/);
      await assert.rejects(docker.getImage(ids[0] ?? "").inspect(), (e: { statusCode?: number }) => e.statusCode === 404);
      assert.ok(await docker.getImage(ids[1] ?? "").inspect(), "the newest shadow stays");
    });
  });
});
