/**
 * A container image's CycloneDX 1.5 SBOM, each component carrying the layer that installed it,
 * built with the CycloneDX library and checked against the 1.5 JSON schema before anyone sees it.
 */
import { randomUUID } from "node:crypto";
import type { Serialize, Validation } from "@cyclonedx/cyclonedx-library";
import { PackageURL } from "packageurl-js";
import type { LayerGraph } from "../proto/gen/shadowlayer/v1/graph_pb.js";
import type { ImageInventory, OsRelease, Package } from "../proto/gen/shadowlayer/v1/vulns_pb.js";
import { Code, ShadowError } from "../common/errors.js";
import { normalizePypiName } from "../common/package-names.js";
import { VERSION } from "../common/version.js";

/**
 * The package URL of an installed package: deb (namespace the distribution, `distro` qualifier
 * `<id>-<version>`), apk (namespace alpine, same qualifier), npm (a scope is the namespace), pypi
 * (PEP 503 name); anything else generic. undefined when the name cannot make a valid purl.
 */
export function purlOf(p: Package, os: OsRelease | undefined): string | undefined {
  const distro = os !== undefined && os.id !== "" && os.versionId !== "" ? { distro: `${os.id}-${os.versionId}` } : undefined;
  let purl: PackageURL;
  try {
    switch (p.type) {
      case "deb":
        purl = new PackageURL("deb", os?.id || "debian", p.name, p.version, distro, undefined);
        break;
      case "apk":
        purl = new PackageURL("apk", "alpine", p.name, p.version, distro, undefined);
        break;
      case "npm": {
        const slash = p.name.startsWith("@") ? p.name.indexOf("/") : -1;
        purl = slash > 0
          ? new PackageURL("npm", p.name.slice(0, slash), p.name.slice(slash + 1), p.version, undefined, undefined)
          : new PackageURL("npm", undefined, p.name, p.version, undefined, undefined);
        break;
      }
      case "pypi":
        // The library only lower-cases and maps "_"; PEP 503 also folds runs of "-_." into one "-".
        purl = new PackageURL("pypi", undefined, normalizePypiName(p.name), p.version, undefined, undefined);
        break;
      default:
        purl = new PackageURL("generic", undefined, p.name, p.version, undefined, undefined);
    }
  } catch {
    return undefined;
  }
  // The library leaves "+" bare in versions; the purl standard's permitted characters exclude it
  // (deb "2.36-9+deb12u4" is "2.36-9%2Bdeb12u4"). Every other component already encodes "+".
  return purl.toString().replaceAll("+", "%2B");
}

// The library takes long to load and its schema long to compile: both on first use, once, so
// that the commands that print no SBOM never pay for it.
let tools: Promise<{ cdx: typeof import("@cyclonedx/cyclonedx-library"); serializer: Serialize.JsonSerializer; validator: Validation.JsonStrictValidator }> | undefined;
function cycloneTools(): NonNullable<typeof tools> {
  tools ??= import("@cyclonedx/cyclonedx-library").then((cdx) => ({
    cdx,
    serializer: new cdx.Serialize.JsonSerializer(new cdx.Serialize.JSON.Normalize.Factory(cdx.Spec.Spec1dot5)),
    validator: new cdx.Validation.JsonStrictValidator(cdx.Spec.Version.v1dot5),
  }));
  return tools;
}

/**
 * CycloneDX 1.5 JSON for a container's image, each component's layer in its properties.
 * Rejects (ShadowError Internal) when the document does not validate against the 1.5 schema.
 */
export async function cyclonedx(graph: LayerGraph, inv: ImageInventory, now = new Date()): Promise<Record<string, unknown>> {
  const { cdx, serializer, validator } = await cycloneTools();
  const { Enums, Models } = cdx;
  const layers = new Map(graph.layers.map((l) => [l.layerId, l]));
  const prop = (name: string, value: string) => new Models.Property(`shadowlayer:${name}`, value);

  const bom = new Models.Bom({ serialNumber: `urn:uuid:${randomUUID()}`, version: 1 });
  bom.metadata.timestamp = now;
  bom.metadata.tools.components.add(new Models.Component(Enums.ComponentType.Application, "shadowlayer", { version: VERSION }));
  bom.metadata.component = new Models.Component(Enums.ComponentType.Container, graph.image, {
    bomRef: graph.imageId,
    version: graph.imageId,
    properties: new Models.PropertyRepository([
      prop("container_id", graph.containerId),
      prop("container_name", graph.containerName),
      ...(inv.os !== undefined ? [prop("os", `${inv.os.id} ${inv.os.versionId}`)] : []),
      ...inv.layerIds.map((id, i) => prop(`layer.${i}`, id)),
      ...inv.partial.map((x) => prop("partial", `${x.path} in ${x.layerId}: ${x.reason}`)),
    ]),
  });

  const seen = new Set<string>();
  for (const p of inv.packages) {
    const purl = purlOf(p, inv.os);
    let ref = purl ?? `${p.type}:${p.name}@${p.version}`;
    // Two copies of one package in different paths (npm) are two components.
    if (seen.has(ref)) ref = `${ref}#${p.path}`;
    seen.add(ref);
    const l = layers.get(p.layerId);
    const properties = [prop("layer_id", p.layerId), prop("layer_index", String(l?.index ?? inv.layerIds.indexOf(p.layerId))), prop("package_path", p.path)];
    if (l !== undefined) properties.push(prop("layer_name", l.name));
    if (p.sourceName !== "") properties.push(prop("source_package", p.sourceName));
    if (p.sourceVersion !== "") properties.push(prop("source_version", p.sourceVersion));
    bom.components.add(
      new Models.Component(Enums.ComponentType.Library, p.name, {
        bomRef: ref,
        version: p.version,
        ...(purl !== undefined ? { purl } : {}),
        properties: new Models.PropertyRepository(properties),
      }),
    );
  }

  const doc = JSON.parse(serializer.serialize(bom)) as Record<string, unknown>;
  // The library lists every component in `dependencies` with no dependsOn, which CycloneDX reads
  // as "has no dependencies"; the inventory does not know them, so the graph is left out.
  delete doc.dependencies;
  const text = JSON.stringify(doc);
  let invalid: unknown;
  try {
    invalid = await validator.validate(text);
  } catch (err) {
    // No validator for 1.5, or its optional dependencies (ajv, ajv-formats) missing.
    throw new ShadowError(Code.Internal, `cannot validate the SBOM: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (invalid !== null) {
    throw new ShadowError(Code.Internal, `the SBOM does not validate against CycloneDX 1.5: ${JSON.stringify(invalid).slice(0, 2000)}`);
  }
  return doc;
}
