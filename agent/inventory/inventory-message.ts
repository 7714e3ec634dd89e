/**
 * An image's inventory as the wire message (vulns.proto ImageInventory): what the agent's scanner
 * sends and what the aggregator's re-scan of a shadow produces, built in one place so the two
 * cannot drift apart.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { ImageInventorySchema, InventoryProblemSchema, OsReleaseSchema, PackageSchema, type ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { ImageInventory as LayerInventory } from "./layer-inventory.js";

/** The message for image `imageId` whose layers (bottom first) are `layerIds`. */
export function inventoryMessage(imageId: string, layerIds: string[], r: LayerInventory): ImageInventory {
  return create(ImageInventorySchema, {
    imageId,
    packages: r.packages.map((p) =>
      create(PackageSchema, {
        type: p.type,
        name: p.name,
        version: p.version,
        sourceName: p.sourceName ?? "",
        sourceVersion: p.sourceVersion ?? "",
        path: p.path,
        layerId: p.layerId,
      }),
    ),
    ...(r.os !== undefined ? { os: create(OsReleaseSchema, { id: r.os.id, versionId: r.os.versionId, codename: r.os.versionCodename ?? "", prettyName: r.os.prettyName ?? "" }) } : {}),
    partial: r.partial.map((x) => create(InventoryProblemSchema, { layerId: x.layerId, path: x.path, reason: x.reason })),
    scannedAt: timestampNow(),
    layerIds,
  });
}
