/**
 * The CycloneDX SBOM: each component on the layer that installed it, the image and its layers in
 * the metadata, valid against the CycloneDX 1.5 schema; a document that is not valid is an error.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Spec, Validation } from "@cyclonedx/cyclonedx-library";
import { cyclonedx } from "../../cli/sbom.js";
import { Code, ShadowError } from "../../common/errors.js";
import { VERSION } from "../../common/version.js";
import { LayerGraphSchema, LayerSchema } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { ImageInventorySchema, InventoryProblemSchema, OsReleaseSchema, PackageSchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";

const L = (c: string) => `sha256:${c.repeat(64)}`;
const graph = create(LayerGraphSchema, {
  containerId: "c".repeat(64),
  containerName: "web",
  image: "demo:latest",
  imageId: L("9"),
  layers: [create(LayerSchema, { layerId: L("1"), index: 0, name: "debian:12" }), create(LayerSchema, { layerId: L("2"), index: 1, name: "RUN apt-get upgrade" })],
});
const inventory = create(ImageInventorySchema, {
  imageId: L("9"),
  os: create(OsReleaseSchema, { id: "debian", versionId: "12" }),
  layerIds: [L("1"), L("2"), L("3")],
  partial: [create(InventoryProblemSchema, { layerId: L("3"), path: "/app/node_modules/x/package.json", reason: "not JSON" })],
  packages: [
    create(PackageSchema, { type: "deb", name: "libc6", version: "2.36-9+deb12u4", sourceName: "glibc", sourceVersion: "2.36-9+deb12u4", layerId: L("1"), path: "/var/lib/dpkg/status" }),
    create(PackageSchema, { type: "deb", name: "libssl3", version: "3.0.11-1~deb12u2", sourceName: "openssl", layerId: L("2"), path: "/var/lib/dpkg/status" }),
    create(PackageSchema, { type: "npm", name: "lodash", version: "4.17.20", layerId: L("3"), path: "/app/node_modules/lodash/package.json" }),
    create(PackageSchema, { type: "npm", name: "lodash", version: "4.17.20", layerId: L("3"), path: "/app/node_modules/a/node_modules/lodash/package.json" }),
    create(PackageSchema, { type: "pypi", name: "Some_Pkg", version: "1.5", layerId: L("3"), path: "/usr/lib/python3/dist-packages/Some_Pkg.dist-info/METADATA" }),
  ],
});

interface Bom {
  bomFormat: string;
  specVersion: string;
  serialNumber: string;
  version: number;
  metadata: {
    timestamp: string;
    tools: { components: Array<{ type: string; name: string; version: string }> };
    component: { type: string; "bom-ref": string; name: string; version: string; properties: Array<{ name: string; value: string }> };
  };
  components: Array<{ type: string; "bom-ref": string; name: string; version: string; purl?: string; properties: Array<{ name: string; value: string }> }>;
  dependencies?: unknown;
}

describe("CycloneDX SBOM", () => {
  const now = new Date("2026-11-27T12:00:00.000Z");

  it("describes the image and each package on its layer", async () => {
    const bom = (await cyclonedx(graph, inventory, now)) as unknown as Bom;
    assert.equal(bom.bomFormat, "CycloneDX");
    assert.equal(bom.specVersion, "1.5");
    assert.match(bom.serialNumber, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(bom.version, 1);
    assert.equal(bom.metadata.timestamp, "2026-11-27T12:00:00.000Z");
    assert.deepEqual(bom.metadata.tools.components, [{ type: "application", name: "shadowlayer", version: VERSION }]);
    const image = bom.metadata.component;
    assert.deepEqual([image.type, image["bom-ref"], image.name, image.version], ["container", L("9"), "demo:latest", L("9")]);
    assert.deepEqual(image.properties, [
      { name: "shadowlayer:container_id", value: "c".repeat(64) },
      { name: "shadowlayer:container_name", value: "web" },
      { name: "shadowlayer:os", value: "debian 12" },
      { name: "shadowlayer:layer.0", value: L("1") },
      { name: "shadowlayer:layer.1", value: L("2") },
      { name: "shadowlayer:layer.2", value: L("3") },
      { name: "shadowlayer:partial", value: `/app/node_modules/x/package.json in ${L("3")}: not JSON` },
    ]);

    assert.deepEqual(
      bom.components.map((c) => [c.type, c.name, c.version, c.purl, c["bom-ref"]]),
      [
        ["library", "libc6", "2.36-9+deb12u4", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?distro=debian-12", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?distro=debian-12"],
        ["library", "libssl3", "3.0.11-1~deb12u2", "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?distro=debian-12", "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?distro=debian-12"],
        ["library", "lodash", "4.17.20", "pkg:npm/lodash@4.17.20", "pkg:npm/lodash@4.17.20"],
        // Two copies in two paths are two components, told apart by their bom-ref.
        ["library", "lodash", "4.17.20", "pkg:npm/lodash@4.17.20", "pkg:npm/lodash@4.17.20#/app/node_modules/a/node_modules/lodash/package.json"],
        ["library", "Some_Pkg", "1.5", "pkg:pypi/some-pkg@1.5", "pkg:pypi/some-pkg@1.5"],
      ],
    );
    assert.deepEqual(bom.components[0]?.properties, [
      { name: "shadowlayer:layer_id", value: L("1") },
      { name: "shadowlayer:layer_index", value: "0" },
      { name: "shadowlayer:package_path", value: "/var/lib/dpkg/status" },
      { name: "shadowlayer:layer_name", value: "debian:12" },
      { name: "shadowlayer:source_package", value: "glibc" },
      { name: "shadowlayer:source_version", value: "2.36-9+deb12u4" },
    ]);
    // A layer the graph does not list (no name) still has its place in the image's layer list.
    assert.deepEqual(bom.components[2]?.properties.slice(0, 2), [
      { name: "shadowlayer:layer_id", value: L("3") },
      { name: "shadowlayer:layer_index", value: "2" },
    ]);
    assert.equal(bom.dependencies, undefined, "the inventory does not know the packages' dependencies");
    assert.equal(await new Validation.JsonStrictValidator(Spec.Version.v1dot5).validate(JSON.stringify(bom)), null);
  });

  it("refuses a document the 1.5 schema rejects", async () => {
    // A timestamp past year 9999 serialises as "+010000-…", which is not an RFC 3339 date-time.
    await assert.rejects(
      cyclonedx(graph, inventory, new Date(Date.UTC(10000, 0, 1))),
      (err: unknown) => err instanceof ShadowError && err.code === Code.Internal && /does not validate against CycloneDX 1\.5/.test(err.message) && /timestamp|date-time/.test(err.message),
    );
  });
});
