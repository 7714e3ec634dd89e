/**
 * Packages as the inventory reads them: what one database records, what its parsers return, and
 * a package once it is attributed to the layer that brought it.
 */

export type PackageType = "deb" | "apk" | "npm" | "pypi";

/** A package as one database records it. */
export interface PackageRecord {
  type: PackageType;
  /** deb: binary package; apk: package; npm: package name (scoped ok); pypi: PEP 503-normalised. */
  name: string;
  /** As recorded (deb: full [epoch:]upstream[-revision]). */
  version: string;
  /** deb: the Source: name (the binary's own name when there is no Source:); apk: origin (o:). */
  sourceName?: string;
  /** deb: the version in Source: parentheses, else the binary version. */
  sourceVersion?: string;
}

export interface Package extends PackageRecord {
  /** The database file inside the image, e.g. "/var/lib/dpkg/status". */
  path: string;
  /** Index (bottom = 0) of the layer the package is attributed to. */
  layerIndex: number;
  /** That layer's diffID. */
  layerId: string;
}

/** One entry of a many-package database; `key` tells entries apart (deb: name:arch). */
export interface DbEntry {
  key: string;
  pkg: PackageRecord;
}

/** What a many-package database parser returns: the entries it could read and what it could not. */
export interface DatabaseParse {
  entries: DbEntry[];
  problems: string[];
  /** Stanzas or records dropped, plus one for a truncated file: > 0 means the view is unknown beyond `entries`. */
  unreadable: number;
}

/** What a one-package file parser returns: a package, nothing (not a package), or a problem. */
export interface FileParse {
  pkg?: PackageRecord;
  problem?: string;
}
