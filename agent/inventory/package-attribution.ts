/**
 * Attribution of an image's packages to the layers that brought them.
 *
 * The image's packages are those in a database's view at the top layer. Each is attributed to
 * the lowest layer L such that the view at every layer from L to the top holds the same name and
 * version (the start of its final unbroken run): an upgrade is attributed to the upgrading layer,
 * a package removed and added again to the layer that added it again.
 *
 * Unknown views (a database file partly or not at all readable) neither break nor start a run:
 * walking down from the top, a layer whose view is unknown and does not show the package is
 * passed over, and the attribution is the lowest layer that positively shows the same name and
 * version with only such layers in between. The image's list is what the top view shows: the
 * readable entries of a partly readable top file are listed, a package the top file may hold in
 * an unreadable part is not, and lower views are never used in its place.
 */
import type { ParsedDb } from "./database-file.js";
import type { Package, PackageType } from "./package-record.js";

/** Which layer's copy of the database a view shows, and whether that copy is a symlink. */
export interface DbProvider {
  layer: number;
  kind: "file" | "symlink";
}

const TYPE_ORDER: Record<PackageType, number> = { deb: 0, apk: 1, npm: 2, pypi: 3 };

/**
 * The packages database `rel` shows at the top layer, each attributed. `views` is the database's
 * view at every layer, bottom first; `parse` reads one layer's copy (the caller caches it).
 */
export async function attributeDatabase(
  rel: string,
  views: readonly (DbProvider | null)[],
  parse: (p: DbProvider) => Promise<ParsedDb>,
  diffIds: readonly string[],
): Promise<Package[]> {
  const out: Package[] = [];
  const topIndex = views.length - 1;
  const top = views[topIndex];
  if (top === null || top === undefined) return out;
  const topDb = await parse(top);
  for (const [key, rec] of topDb.entries) {
    let start = topIndex;
    for (let L = topIndex - 1; L >= 0; L--) {
      const p = views[L];
      if (p === null || p === undefined) break;
      const db = await parse(p);
      const e = db.entries.get(key);
      if (e !== undefined && e.name === rec.name && e.version === rec.version) start = L;
      else if (e === undefined && db.unknown) continue;
      else break;
    }
    out.push({ ...rec, path: `/${rel}`, layerIndex: start, layerId: diffIds[start] ?? "" });
  }
  return out;
}

/** The image's list: the same package recorded twice in one database (one per architecture) keeps the earliest layer. */
export function imagePackages(packages: Package[]): Package[] {
  const best = new Map<string, Package>();
  for (const p of packages) {
    const k = `${p.type}\0${p.name}\0${p.version}\0${p.path}`;
    const have = best.get(k);
    if (have === undefined || p.layerIndex < have.layerIndex) best.set(k, p);
  }
  return [...best.values()].sort(
    (a, b) => TYPE_ORDER[a.type] - TYPE_ORDER[b.type] || cmp(a.name, b.name) || cmp(a.version, b.version) || cmp(a.path, b.path),
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
