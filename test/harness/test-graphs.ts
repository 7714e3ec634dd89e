/**
 * Graphs for tests that play an agent: distinct container ids by the thousand, small two-layer
 * graphs (with a long image name or a big created_by where a test needs size), and their upserts.
 */
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { LayerGraphSchema, LayerKind, type LayerGraph, type LayerSchema } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { AgentBody, AgentStream } from "./agent-stream.js";

/** A 64-hex container id, distinct per (`group`, `n`). */
export function containerIdOf(n: number, group = 0): string {
  return `${group.toString(16).padStart(4, "0")}${n.toString(16).padStart(60, "0")}`;
}

/** A small two-layer graph of `node`; `extra` sets other fields (a long image name, a big created_by). */
export function testGraph(containerId: string, node: string, extra: { containerName?: string; image?: string; imageId?: string; state?: string; layers?: Array<MessageInitShape<typeof LayerSchema>> } = {}): LayerGraph {
  return create(LayerGraphSchema, {
    containerId,
    containerName: `app-${containerId.slice(-8)}`,
    node,
    state: "running",
    image: "example/app:1",
    imageId: `sha256:${"e".repeat(64)}`,
    layers: [
      { layerId: `sha256:${"a".repeat(64)}`, name: "base", kind: LayerKind.IMAGE, index: 0 },
      { layerId: `rw:${containerId}`, name: "rw", kind: LayerKind.WRITABLE, dependencies: [`sha256:${"a".repeat(64)}`] },
    ],
    ...extra,
  });
}

export const upsertOf = (g: LayerGraph): AgentBody => ({ case: "graphUpsert", value: { graph: g } });

/**
 * Sends every body on an agent's stream back to back, a thousand at a time (a round trip per
 * thousand, not per message), and resolves when all are acked.
 */
export async function publish(agent: AgentStream, bodies: readonly AgentBody[]): Promise<void> {
  for (let i = 0; i < bodies.length; i += 1000) await Promise.all(bodies.slice(i, i + 1000).map((b) => agent.send(b)));
}

/**
 * The demo app image (`cli/demo-images.ts`) as a real agent graphs it, on either runtime: image
 * layers are its diffIDs bottom first, each depending on the one below and named by its history
 * step (empty steps such as ENV are not layers), the COPY layer holding busybox, and the writable
 * layer on top. Returns the image layers.
 */
export function assertAppImageLayers(g: LayerGraph, diffIds: readonly string[]): LayerGraph["layers"] {
  const image = g.layers.filter((l) => l.kind === LayerKind.IMAGE);
  assert.deepEqual(image.map((l) => l.layerId), diffIds);
  image.forEach((l, i) => {
    assert.equal(l.index, i);
    assert.deepEqual(l.dependencies, i === 0 ? [] : [diffIds[i - 1]]);
    assert.ok(l.name.length > 0);
  });
  assert.match(image[1]?.name ?? "", /^RUN mkdir -p \/srv\/www/);
  assert.match(image[2]?.name ?? "", /^COPY .* in \/opt\/app\/bin\/busybox/);
  assert.ok((image[2]?.sizeBytes ?? 0n) > 1_000_000n, "the COPY layer holds the busybox copy");
  const rw = g.layers.find((l) => l.kind === LayerKind.WRITABLE);
  assert.equal(rw?.layerId, `rw:${g.containerId}`);
  assert.deepEqual(rw?.dependencies, [diffIds[diffIds.length - 1]]);
  return image;
}
