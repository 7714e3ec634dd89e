/**
 * A node's windows that end together are spooled in batches that each fit well within the
 * message limit, so thousands of containers never make an item the link has to drop.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { WindowBatchSchema, WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { MESSAGE_LIMIT_BYTES } from "../../agent/link/message-caps.js";
import { windowBatches, WINDOW_BATCH_BYTES } from "../../agent/link/window-batches.js";

const window = (i: number) =>
  create(WindowSummarySchema, {
    node: "n",
    containerId: i.toString(16).padStart(64, "0"),
    containerName: `app-${i}`,
    layers: Array.from({ length: 3 }, (_, l) => ({ layerId: `sha256:${l}`, layerName: `RUN step ${l} ${"é".repeat(40)}`, featuresF64le: new Uint8Array(53 * 8), libraryLayers: ["sha256:0"] })),
    net: { tcpByState: { ESTABLISHED: 3, LISTEN: 1 } },
  });

describe("window batches", () => {
  it("splits thousands of windows into items well within the limit, in order", () => {
    const windows = Array.from({ length: 5_000 }, (_, i) => window(i));
    assert.ok(toBinary(WindowBatchSchema, { $typeName: "shadowlayer.v1.WindowBatch", windows }).length > MESSAGE_LIMIT_BYTES, "over the limit as one item");
    const batches = windowBatches(windows);
    assert.ok(batches.length >= 5);
    for (const b of batches) assert.ok(toBinary(WindowBatchSchema, { $typeName: "shadowlayer.v1.WindowBatch", windows: b }).length <= WINDOW_BATCH_BYTES);
    assert.deepEqual(batches.flat().map((w) => w.containerId), windows.map((w) => w.containerId));
  });

  it("keeps an ordinary tick's windows in one item", () => {
    const windows = Array.from({ length: 30 }, (_, i) => window(i));
    assert.deepEqual(windowBatches(windows), [windows]);
    assert.deepEqual(windowBatches([]), []);
  });
});
