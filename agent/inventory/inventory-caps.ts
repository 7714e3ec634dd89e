/** How far one layer's search for package databases goes, and how large a database is read. */

export interface InventoryCaps {
  /** Directory entries listed plus files checked, per layer, before its search stops. */
  maxEntriesPerLayer: number;
  /** Database files found per layer before its search stops. */
  maxDbFilesPerLayer: number;
  /** Directories below an application root searched for node_modules / site-packages. */
  maxSearchDepth: number;
  /** node_modules nested in node_modules (npm's nesting, pnpm's store) followed. */
  maxNodeModulesNesting: number;
  /** dpkg status and apk installed files larger than this are not read. */
  maxDatabaseBytes: number;
  /** package.json files larger than this are not read; METADATA / PKG-INFO are read up to this. */
  maxManifestBytes: number;
}

/**
 * A large Debian image's status file is 2-4 MB; a big node app has a few thousand package dirs,
 * each costing one listing entry and two file checks. 200k entries is an order of magnitude
 * above that and takes well under a second.
 */
export const DEFAULT_INVENTORY_CAPS: Readonly<InventoryCaps> = Object.freeze({
  maxEntriesPerLayer: 200_000,
  maxDbFilesPerLayer: 50_000,
  maxSearchDepth: 6,
  maxNodeModulesNesting: 12,
  maxDatabaseBytes: 64 * 1024 * 1024,
  maxManifestBytes: 4 * 1024 * 1024,
});
