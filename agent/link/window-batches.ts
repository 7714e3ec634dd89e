/**
 * The windows that end together go to the spool as one item, unless there are so many (a node
 * with thousands of containers) that the item would near the message limit: then as several,
 * each well within it, so a busy node's windows are never dropped as oversize.
 */
import type { WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";

/** Estimated bytes of windows per spool item: a quarter of the message limit. */
export const WINDOW_BATCH_BYTES = 1024 * 1024;

/** An upper bound of a window's encoded size, without encoding it (this runs every window). */
function windowBytes(w: WindowSummary): number {
  let n = 256 + w.node.length + w.containerId.length + 3 * w.containerName.length + 32 * Object.keys(w.net?.tcpByState ?? {}).length;
  for (const l of w.layers) {
    n += 128 + l.layerId.length + 3 * l.layerName.length + l.featuresF64le.length;
    for (const lib of l.libraryLayers) n += 4 + 3 * lib.length;
  }
  return n;
}

/** `windows` in batches of at most `maxBytes` (estimated) each, in order; one batch when they fit, none when empty. */
export function windowBatches(windows: WindowSummary[], maxBytes = WINDOW_BATCH_BYTES): WindowSummary[][] {
  const out: WindowSummary[][] = [];
  let batch: WindowSummary[] = [];
  let used = 0;
  for (const w of windows) {
    const bytes = windowBytes(w);
    if (batch.length > 0 && used + bytes > maxBytes) {
      out.push(batch);
      batch = [];
      used = 0;
    }
    batch.push(w);
    used += bytes;
  }
  if (batch.length > 0) out.push(batch);
  return out;
}
