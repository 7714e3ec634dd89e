/**
 * One layer's bounded search for package database files, read in the layer's own directory (never
 * the whole tree, never through a symlinked directory).
 *
 *   dpkg  var/lib/dpkg/status, var/lib/dpkg/status.d/* (not *.md5sums)
 *   apk   lib/apk/db/installed
 *   npm   usr/lib/node_modules, usr/local/lib/node_modules, and any `node_modules` dir found
 *         below the application roots; in each: <name>/ and @scope/<name>/ package dirs, their
 *         nested node_modules and pnpm's .pnpm/<id>/node_modules, up to `maxNodeModulesNesting`
 *   pypi  usr/lib/python3*\/{site,dist}-packages, usr/local/lib/python3*\/{site,dist}-packages,
 *         and any site-packages / dist-packages dir found below the application roots; in each
 *         *.dist-info/METADATA, *.egg-info/PKG-INFO and single-file *.egg-info
 *   application roots: app, srv, opt, home, root, usr/src, usr/app, var/www, workspace,
 *         searched `maxSearchDepth` directories deep (so opt/venv/lib/python3.11/site-packages
 *         and home/u/.local/lib/python3.11/site-packages are found), skipping VCS and cache dirs.
 *
 * Directories are read as a stream (one entry at a time, never a whole listing held), and every
 * entry and file check is counted as it happens: the search stops after `maxEntriesPerLayer` of
 * them, `maxDbFilesPerLayer` database files, or when the image's budget is spent, and says where
 * and why in `stoppedAt`. Entries come in the directory's own order: an image layer does not
 * change, so a capped search of it stops at the same place each time on the same host.
 */
import type { Dirent } from "node:fs";
import { opendir } from "node:fs/promises";
import { entryKindAt, type EntryKind } from "../overlay/entry-kind.js";
import type { LayerDir } from "../overlay/layer-dir.js";
import type { InventoryCaps } from "./inventory-caps.js";
import { isNodeModulesManifest } from "./npm.js";
import type { ScanBudget } from "./scan-budget.js";

/** What a database file is, which says how it is parsed. */
export type DbKind = "dpkg-status" | "dpkg-status.d" | "apk" | "npm" | "pypi";

const DPKG_STATUS = "var/lib/dpkg/status";
const DPKG_STATUS_D = "var/lib/dpkg/status.d";
const APK_INSTALLED = "lib/apk/db/installed";
const NPM_GLOBAL_ROOTS = ["usr/lib/node_modules", "usr/local/lib/node_modules"];
const PYTHON_LIB_ROOTS = ["usr/lib", "usr/local/lib"];
const APP_ROOTS = ["app", "srv", "opt", "home", "root", "usr/src", "usr/app", "var/www", "workspace"];
const SEARCH_SKIP = new Set([".git", ".hg", ".svn", ".cache", ".npm", ".pnpm-store", ".yarn", "__pycache__", "proc", "sys", "dev"]);

/** A database is a file, or a symlink the reader will report as not followed. */
const fileLike = (k: EntryKind): boolean => k === "file" || k === "symlink";

export class DatabaseSearch {
  /** Database files found, relative to the layer's root. */
  readonly found = new Map<string, DbKind>();
  private work = 0;
  stoppedAt: { path: string; reason: string } | undefined;

  constructor(
    private readonly fs: LayerDir,
    private readonly caps: InventoryCaps,
    private readonly budget: ScanBudget,
  ) {}

  private spend(where: string): boolean {
    if (this.stoppedAt !== undefined) return false;
    this.work++;
    if (this.work > this.caps.maxEntriesPerLayer) {
      this.stoppedAt = { path: `/${where}`, reason: `search stopped after ${this.caps.maxEntriesPerLayer} directory entries (cap); databases further on are not listed` };
      return false;
    }
    if (!this.budget.spendEntries(1)) {
      this.stoppedAt = { path: `/${where}`, reason: `search stopped: ${this.budget.spent}; databases further on are not listed` };
      return false;
    }
    return true;
  }

  /** A path whose parents are checked one by one (asked again and again: the layer caches it). */
  private kind(rel: string): EntryKind {
    return this.spend(rel) ? this.fs.kind(rel) : "absent";
  }

  /**
   * A path below a directory this walk listed: checked once, so not cached (a cache of every
   * package dir's checks would grow with the directory).
   */
  private probe(rel: string): EntryKind {
    return this.spend(rel) ? entryKindAt(this.fs.abs(rel)) : "absent";
  }

  private add(rel: string, kind: DbKind): void {
    if (this.stoppedAt !== undefined) return;
    if (this.found.size >= this.caps.maxDbFilesPerLayer) {
      this.stoppedAt = { path: `/${rel}`, reason: `search stopped after ${this.caps.maxDbFilesPerLayer} database files (cap)` };
      return;
    }
    this.found.set(rel, kind);
  }

  /**
   * The directory's entries, read a few at a time and each counted as it comes; ends when the
   * search stops. The directory stays open while the caller descends below an entry, so open
   * handles are bounded by the search's depth.
   */
  private async *list(rel: string): AsyncGenerator<Dirent> {
    if (this.stoppedAt !== undefined) return;
    let dir;
    try {
      dir = await opendir(this.fs.abs(rel), { bufferSize: 64 });
    } catch {
      return;
    }
    try {
      for (;;) {
        const e = await dir.read();
        if (e === null || !this.spend(rel)) return;
        await this.budget.pace();
        yield e;
      }
    } catch {
      // A directory that fails part way (EIO, removed) ends its listing there.
    } finally {
      await dir.close().catch(() => undefined);
    }
  }

  /** `rel` is a directory of this layer reached through directories only (never through a symlink). */
  private isDir(rel: string): boolean {
    let prefix = "";
    for (const part of rel.split("/")) {
      prefix = prefix === "" ? part : `${prefix}/${part}`;
      if (this.kind(prefix) !== "dir") return false;
    }
    return true;
  }

  async run(): Promise<void> {
    if (fileLike(this.kind(DPKG_STATUS))) this.add(DPKG_STATUS, "dpkg-status");
    if (this.isDir(DPKG_STATUS_D)) {
      for await (const e of this.list(DPKG_STATUS_D)) {
        if ((e.isFile() || e.isSymbolicLink()) && !e.name.startsWith(".") && !e.name.endsWith(".md5sums")) this.add(`${DPKG_STATUS_D}/${e.name}`, "dpkg-status.d");
      }
    }
    if (fileLike(this.kind(APK_INSTALLED))) this.add(APK_INSTALLED, "apk");
    for (const r of NPM_GLOBAL_ROOTS) if (this.isDir(r)) await this.nodeModules(r, 0);
    for (const base of PYTHON_LIB_ROOTS) {
      if (!this.isDir(base)) continue;
      for await (const e of this.list(base)) {
        if (!e.isDirectory() || !/^python3(\.\d+)?$/.test(e.name)) continue;
        for (const sp of ["site-packages", "dist-packages"]) {
          const d = `${base}/${e.name}/${sp}`;
          if (this.probe(d) === "dir") await this.sitePackages(d);
        }
      }
    }
    for (const r of APP_ROOTS) if (this.isDir(r)) await this.search(r, 1);
  }

  private async search(rel: string, depth: number): Promise<void> {
    for await (const e of this.list(rel)) {
      if (!e.isDirectory()) continue;
      const child = `${rel}/${e.name}`;
      if (e.name === "node_modules") await this.nodeModules(child, 0);
      else if (e.name === "site-packages" || e.name === "dist-packages") await this.sitePackages(child);
      else if (depth < this.caps.maxSearchDepth && !SEARCH_SKIP.has(e.name)) await this.search(child, depth + 1);
    }
  }

  private async nodeModules(rel: string, nesting: number): Promise<void> {
    for await (const e of this.list(rel)) {
      // Symlinked package dirs (pnpm's top level, workspace links) are skipped: their real dirs are found where they live.
      if (!e.isDirectory()) continue;
      const child = `${rel}/${e.name}`;
      if (e.name === ".pnpm") {
        if (nesting >= this.caps.maxNodeModulesNesting) continue;
        for await (const s of this.list(child)) {
          if (s.isDirectory() && this.probe(`${child}/${s.name}/node_modules`) === "dir") await this.nodeModules(`${child}/${s.name}/node_modules`, nesting + 1);
        }
      } else if (e.name.startsWith(".")) {
        continue;
      } else if (e.name.startsWith("@")) {
        for await (const s of this.list(child)) if (s.isDirectory()) await this.packageDir(`${child}/${s.name}`, nesting);
      } else {
        await this.packageDir(child, nesting);
      }
    }
  }

  private async packageDir(rel: string, nesting: number): Promise<void> {
    const manifest = `${rel}/package.json`;
    if (fileLike(this.probe(manifest)) && isNodeModulesManifest(manifest)) this.add(manifest, "npm");
    if (nesting < this.caps.maxNodeModulesNesting && this.probe(`${rel}/node_modules`) === "dir") await this.nodeModules(`${rel}/node_modules`, nesting + 1);
  }

  private async sitePackages(rel: string): Promise<void> {
    for await (const e of this.list(rel)) {
      const child = `${rel}/${e.name}`;
      if (e.isDirectory() && e.name.endsWith(".dist-info")) {
        if (fileLike(this.probe(`${child}/METADATA`))) this.add(`${child}/METADATA`, "pypi");
      } else if (e.isDirectory() && e.name.endsWith(".egg-info")) {
        if (fileLike(this.probe(`${child}/PKG-INFO`))) this.add(`${child}/PKG-INFO`, "pypi");
      } else if (e.isFile() && e.name.endsWith(".egg-info")) {
        this.add(child, "pypi");
      }
    }
  }
}
