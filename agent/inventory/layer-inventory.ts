/**
 * The packages an image installs, read from its layers' own directories (no container, no merged
 * mount), each attributed to the layer that introduced the version the image ends up with.
 *
 * Views. A layer directory holds only what that layer changed. The view of a path at layer L is
 * the entry in the highest layer <= L that has it, unless something in a layer between hides the
 * lower ones: a whiteout (a 0/0 character device, or an AUFS-style `.wh.<name>` file) at the
 * path or at one of its parents, a parent that is not a directory there, or an opaque parent
 * directory (xattr `trusted.overlay.opaque=y` / `user.overlay.opaque=y`, or a `.wh..wh..opq`
 * file in it). Databases are read per file: `var/lib/dpkg/status` and `lib/apk/db/installed`
 * are each one database that any layer changing it replaces whole; `status.d/*`, `package.json`
 * and `METADATA` are one package per file.
 *
 * Attribution. The image's packages are those in the view at the top layer. Each is attributed to
 * the lowest layer L such that the view at every layer from L to the top holds the same name and
 * version (the start of its final unbroken run): an upgrade is attributed to the upgrading layer,
 * a package removed and added again to the layer that added it again.
 *
 * Unreadable databases. Parsers keep what reads well and count what does not (a garbled or cut
 * stanza, a truncated file); a file that cannot be read at all (not JSON, too large, a symlink,
 * an I/O error) has nothing readable. Either way the view at that file's layers is *unknown* for
 * the packages it does not show, and a `partial` entry names the layer, path and reason. Unknown
 * views neither break nor start a run: walking down from the top, a layer whose view is unknown
 * and does not show the package is passed over, and the attribution is the lowest layer that
 * positively shows the same name and version with only such layers in between. The image's list
 * is what the top view shows: the readable entries of a partly readable top file are listed, a
 * package the top file may hold in an unreadable part is not, and lower views are never used in
 * its place.
 *
 * Opaque xattrs cannot be read from Node without a native addon: they are read in one batch per
 * image by `getfattr` (Debian package attr), else `python3`; with neither, directories are assumed
 * not opaque and `partial` says so.
 *
 * Search roots (read per layer, never the whole tree; symlinks are followed only for os-release,
 * and only inside the image):
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
 * Each layer's search stops after `maxEntriesPerLayer` directory entries and file checks or
 * `maxDbFilesPerLayer` database files; a stopped search is reported in `partial`.
 */
import { execFile, spawn } from "node:child_process";
import { constants, lstatSync, readlinkSync, statSync, type Dirent } from "node:fs";
import { open, readdir } from "node:fs/promises";
import { posix } from "node:path";
import { Code, ShadowError, errnoCode } from "../../common/errors.js";
import { parseApkInstalled } from "./apk.js";
import { parseDpkgStatus, parseDpkgStatusD } from "./dpkg.js";
import { isNodeModulesManifest, parsePackageJson } from "./npm.js";
import { parseOsRelease, type OsRelease } from "./os-release.js";
import { parsePythonMetadata } from "./pypi.js";

export type { OsRelease } from "./os-release.js";

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

export interface InventoryProblem {
  layerId: string;
  path: string;
  reason: string;
}

export interface ImageInventory {
  packages: Package[];
  os?: OsRelease;
  partial: InventoryProblem[];
}

/** A layer, bottom first: its diffID and its own files (overlay2/<cacheId>/diff). */
export interface InventoryLayer {
  diffId: string;
  dir: string;
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

export interface InventoryOptions {
  caps?: Partial<InventoryCaps>;
  /** Which of these absolute directory paths carry the overlay opaque xattr (tests replace it). */
  readOpaqueXattrs?: (dirs: string[]) => Promise<Set<string>>;
}

type DbKind = "dpkg-status" | "dpkg-status.d" | "apk" | "npm" | "pypi";

const DPKG_STATUS = "var/lib/dpkg/status";
const DPKG_STATUS_D = "var/lib/dpkg/status.d";
const APK_INSTALLED = "lib/apk/db/installed";
const NPM_GLOBAL_ROOTS = ["usr/lib/node_modules", "usr/local/lib/node_modules"];
const PYTHON_LIB_ROOTS = ["usr/lib", "usr/local/lib"];
const APP_ROOTS = ["app", "srv", "opt", "home", "root", "usr/src", "usr/app", "var/www", "workspace"];
const SEARCH_SKIP = new Set([".git", ".hg", ".svn", ".cache", ".npm", ".pnpm-store", ".yarn", "__pycache__", "proc", "sys", "dev"]);
const OS_RELEASE_PATHS = ["etc/os-release", "usr/lib/os-release"];
const OPAQUE_MARKER = ".wh..wh..opq";
const TYPE_ORDER: Record<PackageType, number> = { deb: 0, apk: 1, npm: 2, pypi: 3 };

type EntryKind = "dir" | "file" | "symlink" | "whiteout" | "other" | "absent";

/** One layer's directory, with every lstat cached (the same parents are asked about again and again). */
class LayerFs {
  private readonly kinds = new Map<string, EntryKind>();

  constructor(readonly dir: string) {}

  abs(rel: string): string {
    return rel === "" ? this.dir : `${this.dir}/${rel}`;
  }

  /** The caller has checked that every parent of `rel` is a real directory in this layer. */
  kind(rel: string): EntryKind {
    const hit = this.kinds.get(rel);
    if (hit !== undefined) return hit;
    let k: EntryKind;
    try {
      const st = lstatSync(this.abs(rel), { throwIfNoEntry: false });
      if (st === undefined) k = "absent";
      else if (st.isDirectory()) k = "dir";
      else if (st.isFile()) k = "file";
      else if (st.isSymbolicLink()) k = "symlink";
      else if (st.isCharacterDevice() && st.rdev === 0) k = "whiteout";
      else k = "other";
    } catch {
      k = "absent";
    }
    this.kinds.set(rel, k);
    return k;
  }
}

/** A path in one layer: provides it, hides lower layers' copies, or neither (then `dirs` are its parents present here). */
type PathState = { s: "file" } | { s: "symlink" } | { s: "masked" } | { s: "absent"; dirs: string[] };

const FILE: PathState = { s: "file" };
const SYMLINK: PathState = { s: "symlink" };
const MASKED: PathState = { s: "masked" };

/**
 * Walks `rel` from the layer's root, one component at a time, so that a symlinked parent is seen
 * (and never followed out of the layer, possibly to the host's own files).
 */
function stateIn(fs: LayerFs, rel: string): PathState {
  const parts = rel.split("/");
  const dirs: string[] = [];
  let prefix = "";
  for (let i = 0; i < parts.length; i++) {
    const name = parts[i] ?? "";
    const parent = prefix;
    prefix = parent === "" ? name : `${parent}/${name}`;
    const k = fs.kind(prefix);
    if (k === "absent") {
      // Layers unpacked from a tar (not by overlay2) keep AUFS-style whiteout files.
      if (fs.kind(parent === "" ? `.wh.${name}` : `${parent}/.wh.${name}`) !== "absent") return MASKED;
      return { s: "absent", dirs };
    }
    if (i === parts.length - 1) return k === "file" ? FILE : k === "symlink" ? SYMLINK : MASKED;
    if (k !== "dir") return MASKED;
    dirs.push(prefix);
  }
  return MASKED;
}

type Provider = { layer: number; kind: "file" | "symlink" } | null;

interface ParsedDb {
  entries: Map<string, PackageRecord>;
  /** Something in the file could not be read: packages it does not show may still have been there. */
  unknown: boolean;
}

/** Which of `dirs` carry `trusted.overlay.opaque=y` or `user.overlay.opaque=y`: getfattr (package attr), else python3. */
export async function readOpaqueXattrs(dirs: string[]): Promise<Set<string>> {
  if (dirs.length === 0) return new Set();
  try {
    return await opaqueViaGetfattr(dirs);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw ShadowError.from(err);
  }
  try {
    return await opaqueViaPython(dirs);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") {
      throw new ShadowError(Code.FailedPrecondition, "cannot read overlay xattrs: neither getfattr (package attr) nor python3 is installed", { cause: err });
    }
    throw ShadowError.from(err);
  }
}

/** getfattr prints names with octal escapes for unusual bytes (and "\\" for a backslash). */
function unescapeGetfattr(s: string): string {
  if (!s.includes("\\")) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const oct = /^\\([0-7]{3})/.exec(s.slice(i, i + 4));
    if (oct !== null) {
      bytes.push(parseInt(oct[1] ?? "0", 8));
      i += 3;
    } else if (s.startsWith("\\\\", i)) {
      bytes.push(0x5c);
      i += 1;
    } else {
      bytes.push(...Buffer.from(s[i] ?? "", "utf8"));
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

async function opaqueViaGetfattr(dirs: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < dirs.length; i += 1000) {
    const chunk = dirs.slice(i, i + 1000);
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        "getfattr",
        ["--absolute-names", "-d", "-e", "text", "-m", "^(trusted|user)\\.overlay\\.opaque$", "--", ...chunk],
        { maxBuffer: 16 * 1024 * 1024 },
        (err, so) => {
          // Exit status 1 only says some path had no such attribute or vanished; stdout still holds the rest.
          if (err !== null && typeof err.code !== "number") reject(err);
          else resolve(String(so));
        },
      );
    });
    let cur: string | undefined;
    for (const line of stdout.split("\n")) {
      if (line.startsWith("# file: ")) cur = unescapeGetfattr(line.slice("# file: ".length));
      else if (cur !== undefined && /^(trusted|user)\.overlay\.opaque="y"$/.test(line)) out.add(cur);
    }
  }
  return out;
}

const PY_OPAQUE = `import os,sys
out=[]
for p in sys.stdin.buffer.read().split(b"\\0"):
    if not p: continue
    for n in (b"trusted.overlay.opaque", b"user.overlay.opaque"):
        try:
            if os.getxattr(p, n) == b"y":
                out.append(p); break
        except OSError:
            pass
sys.stdout.buffer.write(b"\\0".join(out))
`;

async function opaqueViaPython(dirs: string[]): Promise<Set<string>> {
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", PY_OPAQUE], { stdio: ["pipe", "pipe", "pipe"] });
    const chunks: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => chunks.push(b));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) reject(new ShadowError(Code.Internal, `python3 xattr reader exited ${String(code)}: ${stderr.trim().slice(0, 200)}`));
      else resolve(new Set(Buffer.concat(chunks).toString("utf8").split("\0").filter((p) => p !== "")));
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(dirs.join("\0"));
  });
}

/** A symlink's target as a path inside the image: relative to its directory, ".." stopping at "/". */
export function resolveLinkInImage(rel: string, target: string): string | undefined {
  const joined = target.startsWith("/") ? posix.normalize(target) : posix.normalize(posix.join("/", posix.dirname(rel), target));
  const out = posix.normalize(`/${joined}`).replace(/^\/+/, "");
  return out === "" || out === "." ? undefined : out;
}

async function readCapped(abs: string, max: number, headOnly: boolean): Promise<Buffer | string> {
  let fh;
  try {
    fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    return `cannot open: ${errnoCode(err) ?? String(err)}`;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return "not a regular file";
    if (st.size > max && !headOnly) return `larger than ${max} bytes (${st.size}): not read`;
    const len = Math.min(st.size, max);
    const buf = Buffer.alloc(len);
    let off = 0;
    while (off < len) {
      const { bytesRead } = await fh.read(buf, off, len - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.subarray(0, off);
  } catch (err) {
    return `cannot read: ${errnoCode(err) ?? String(err)}`;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** One layer's bounded search for database files. */
class LayerSearch {
  readonly found = new Map<string, DbKind>();
  private work = 0;
  stoppedAt: { path: string; reason: string } | undefined;

  constructor(
    private readonly fs: LayerFs,
    private readonly caps: InventoryCaps,
  ) {}

  private spend(n: number, where: string): boolean {
    if (this.stoppedAt !== undefined) return false;
    this.work += n;
    if (this.work > this.caps.maxEntriesPerLayer) {
      this.stoppedAt = { path: `/${where}`, reason: `search stopped after ${this.caps.maxEntriesPerLayer} directory entries (cap); databases further on are not listed` };
      return false;
    }
    return true;
  }

  private kind(rel: string): EntryKind {
    return this.spend(1, rel) ? this.fs.kind(rel) : "absent";
  }

  private add(rel: string, kind: DbKind): void {
    if (this.stoppedAt !== undefined) return;
    if (this.found.size >= this.caps.maxDbFilesPerLayer) {
      this.stoppedAt = { path: `/${rel}`, reason: `search stopped after ${this.caps.maxDbFilesPerLayer} database files (cap)` };
      return;
    }
    this.found.set(rel, kind);
  }

  private async list(rel: string): Promise<Dirent[]> {
    if (this.stoppedAt !== undefined) return [];
    let entries: Dirent[];
    try {
      entries = await readdir(this.fs.abs(rel), { withFileTypes: true });
    } catch {
      return [];
    }
    // Entry order from readdir is the directory's, not sorted: sort so a capped search is repeatable.
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return this.spend(entries.length, rel) ? entries : [];
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

  private isFileLike(rel: string): boolean {
    const k = this.kind(rel);
    return k === "file" || k === "symlink";
  }

  async run(): Promise<void> {
    if (this.isFileLike(DPKG_STATUS)) this.add(DPKG_STATUS, "dpkg-status");
    if (this.isDir(DPKG_STATUS_D)) {
      for (const e of await this.list(DPKG_STATUS_D)) {
        if ((e.isFile() || e.isSymbolicLink()) && !e.name.startsWith(".") && !e.name.endsWith(".md5sums")) this.add(`${DPKG_STATUS_D}/${e.name}`, "dpkg-status.d");
      }
    }
    if (this.isFileLike(APK_INSTALLED)) this.add(APK_INSTALLED, "apk");
    for (const r of NPM_GLOBAL_ROOTS) if (this.isDir(r)) await this.nodeModules(r, 0);
    for (const base of PYTHON_LIB_ROOTS) {
      if (!this.isDir(base)) continue;
      for (const e of await this.list(base)) {
        if (!e.isDirectory() || !/^python3(\.\d+)?$/.test(e.name)) continue;
        for (const sp of ["site-packages", "dist-packages"]) {
          const d = `${base}/${e.name}/${sp}`;
          if (this.kind(d) === "dir") await this.sitePackages(d);
        }
      }
    }
    for (const r of APP_ROOTS) if (this.isDir(r)) await this.search(r, 1);
  }

  private async search(rel: string, depth: number): Promise<void> {
    for (const e of await this.list(rel)) {
      if (!e.isDirectory()) continue;
      const child = `${rel}/${e.name}`;
      if (e.name === "node_modules") await this.nodeModules(child, 0);
      else if (e.name === "site-packages" || e.name === "dist-packages") await this.sitePackages(child);
      else if (depth < this.caps.maxSearchDepth && !SEARCH_SKIP.has(e.name)) await this.search(child, depth + 1);
    }
  }

  private async nodeModules(rel: string, nesting: number): Promise<void> {
    for (const e of await this.list(rel)) {
      // Symlinked package dirs (pnpm's top level, workspace links) are skipped: their real dirs are found where they live.
      if (!e.isDirectory()) continue;
      const child = `${rel}/${e.name}`;
      if (e.name === ".pnpm") {
        if (nesting >= this.caps.maxNodeModulesNesting) continue;
        for (const s of await this.list(child)) {
          if (s.isDirectory() && this.kind(`${child}/${s.name}/node_modules`) === "dir") await this.nodeModules(`${child}/${s.name}/node_modules`, nesting + 1);
        }
      } else if (e.name.startsWith(".")) {
        continue;
      } else if (e.name.startsWith("@")) {
        for (const s of await this.list(child)) if (s.isDirectory()) await this.packageDir(`${child}/${s.name}`, nesting);
      } else {
        await this.packageDir(child, nesting);
      }
    }
  }

  private async packageDir(rel: string, nesting: number): Promise<void> {
    const manifest = `${rel}/package.json`;
    if (this.isFileLike(manifest) && isNodeModulesManifest(manifest)) this.add(manifest, "npm");
    if (nesting < this.caps.maxNodeModulesNesting && this.kind(`${rel}/node_modules`) === "dir") await this.nodeModules(`${rel}/node_modules`, nesting + 1);
  }

  private async sitePackages(rel: string): Promise<void> {
    for (const e of await this.list(rel)) {
      const child = `${rel}/${e.name}`;
      if (e.isDirectory() && e.name.endsWith(".dist-info")) {
        if (this.isFileLike(`${child}/METADATA`)) this.add(`${child}/METADATA`, "pypi");
      } else if (e.isDirectory() && e.name.endsWith(".egg-info")) {
        if (this.isFileLike(`${child}/PKG-INFO`)) this.add(`${child}/PKG-INFO`, "pypi");
      } else if (e.isFile() && e.name.endsWith(".egg-info")) {
        this.add(child, "pypi");
      }
    }
  }
}

/** The inventory of one image: search, views, parsing and attribution. */
class InventoryRun {
  private readonly fs: LayerFs[];
  private readonly states = new Map<string, PathState[]>();
  private readonly opaque = new Map<string, boolean>();
  private readonly parsed = new Map<string, Promise<ParsedDb>>();
  private readonly notes = new Map<string, InventoryProblem>();
  private readonly xattrFailedLayers = new Set<number>();

  constructor(
    private readonly layers: InventoryLayer[],
    private readonly caps: InventoryCaps,
    private readonly readXattrs: (dirs: string[]) => Promise<Set<string>>,
  ) {
    this.fs = layers.map((l) => new LayerFs(l.dir.replace(/\/+$/, "")));
  }

  private note(layer: number, rel: string, reason: string): void {
    const layerId = this.layers[layer]?.diffId ?? "";
    const path = rel.startsWith("/") ? rel : `/${rel}`;
    const key = `${layerId}\0${path}\0${reason}`;
    if (!this.notes.has(key)) this.notes.set(key, { layerId, path, reason });
  }

  private statesOf(rel: string): PathState[] {
    let s = this.states.get(rel);
    if (s === undefined) {
      s = this.fs.map((fs) => stateIn(fs, rel));
      this.states.set(rel, s);
    }
    return s;
  }

  /**
   * Makes sure every parent directory that could hide a lower layer's copy of these paths has its
   * opaque flag known: the marker file is checked directly, the xattrs in one batch.
   */
  private async learnOpaque(rels: Iterable<string>): Promise<void> {
    const ask = new Map<string, { layer: number; key: string }>();
    for (const rel of rels) {
      const st = this.statesOf(rel);
      let below = false;
      st.forEach((s, L) => {
        if (s.s === "absent" && below) {
          for (const d of s.dirs) {
            const key = `${L}\0${d}`;
            if (this.opaque.has(key)) continue;
            if (this.fs[L]?.kind(`${d}/${OPAQUE_MARKER}`) !== "absent") this.opaque.set(key, true);
            else ask.set(this.fs[L]?.abs(d) ?? "", { layer: L, key });
          }
        }
        if (s.s === "file" || s.s === "symlink") below = true;
      });
    }
    if (ask.size === 0) return;
    let yes: Set<string>;
    try {
      yes = await this.readXattrs([...ask.keys()]);
    } catch (err) {
      yes = new Set();
      const reason = `${ShadowError.from(err).message}; directories assumed not opaque`;
      for (const [abs, { layer }] of ask) {
        if (this.xattrFailedLayers.has(layer)) continue;
        this.xattrFailedLayers.add(layer);
        this.note(layer, abs.slice((this.fs[layer]?.dir.length ?? 0) + 1), reason);
      }
    }
    for (const [abs, { key }] of ask) this.opaque.set(key, yes.has(abs));
  }

  /** The view of `rel` at every layer, bottom first: which layer provides it, or null. */
  private providers(rel: string): Provider[] {
    const out: Provider[] = [];
    let cur: Provider = null;
    this.statesOf(rel).forEach((s, L) => {
      if (s.s === "file" || s.s === "symlink") cur = { layer: L, kind: s.s };
      else if (s.s === "masked") cur = null;
      else if (cur !== null && s.dirs.some((d) => this.opaque.get(`${L}\0${d}`) === true)) cur = null;
      out.push(cur);
    });
    return out;
  }

  private parse(layer: number, rel: string, kind: DbKind, provider: "file" | "symlink"): Promise<ParsedDb> {
    const key = `${layer}\0${rel}`;
    let p = this.parsed.get(key);
    if (p === undefined) {
      p = this.parseOnce(layer, rel, kind, provider);
      this.parsed.set(key, p);
    }
    return p;
  }

  private async parseOnce(layer: number, rel: string, kind: DbKind, provider: "file" | "symlink"): Promise<ParsedDb> {
    const unknown = (reason: string): ParsedDb => {
      this.note(layer, rel, reason);
      return { entries: new Map(), unknown: true };
    };
    if (provider === "symlink") return unknown("is a symlink: not followed");
    const many = kind === "dpkg-status" || kind === "apk";
    const head = kind === "pypi";
    const raw = await readCapped(this.fs[layer]?.abs(rel) ?? "", many ? this.caps.maxDatabaseBytes : this.caps.maxManifestBytes, head);
    if (typeof raw === "string") return unknown(raw);
    const text = raw.toString("utf8");
    if (kind === "npm" || kind === "pypi") {
      const r = kind === "npm" ? parsePackageJson(text) : parsePythonMetadata(text);
      if (r.problem !== undefined) return unknown(r.problem);
      return { entries: new Map(r.pkg !== undefined ? [["", r.pkg]] : []), unknown: false };
    }
    const r = kind === "dpkg-status" ? parseDpkgStatus(text) : kind === "dpkg-status.d" ? parseDpkgStatusD(text) : parseApkInstalled(text);
    if (r.problems.length > 0) {
      const more = r.problems.length > 3 ? `; and ${r.problems.length - 3} more` : "";
      const what = kind === "apk" ? "record(s)" : "stanza(s)";
      this.note(layer, rel, `${r.unreadable} unreadable ${what} or cut-off end: ${r.problems.slice(0, 3).join("; ")}${more}`);
    }
    const entries = new Map<string, PackageRecord>();
    for (const e of r.entries) if (!entries.has(e.key)) entries.set(e.key, e.pkg);
    return { entries, unknown: r.unreadable > 0 };
  }

  private async attribute(rel: string, kind: DbKind, out: Package[]): Promise<void> {
    const prov = this.providers(rel);
    const topIndex = prov.length - 1;
    const top = prov[topIndex];
    if (top === null || top === undefined) return;
    const topDb = await this.parse(top.layer, rel, kind, top.kind);
    for (const [key, rec] of topDb.entries) {
      let start = topIndex;
      for (let L = topIndex - 1; L >= 0; L--) {
        const p = prov[L];
        if (p === null || p === undefined) break;
        const db = await this.parse(p.layer, rel, kind, p.kind);
        const e = db.entries.get(key);
        if (e !== undefined && e.name === rec.name && e.version === rec.version) start = L;
        else if (e === undefined && db.unknown) continue;
        else break;
      }
      out.push({ ...rec, path: `/${rel}`, layerIndex: start, layerId: this.layers[start]?.diffId ?? "" });
    }
  }

  private async osRelease(): Promise<OsRelease | undefined> {
    const topIndex = this.fs.length - 1;
    for (const start of OS_RELEASE_PATHS) {
      let rel: string | undefined = start;
      for (let hop = 0; hop < 8 && rel !== undefined; hop++) {
        await this.learnOpaque([rel]);
        const p = this.providers(rel)[topIndex];
        if (p === null || p === undefined) break;
        const abs = this.fs[p.layer]?.abs(rel) ?? "";
        if (p.kind === "symlink") {
          let target: string;
          try {
            target = readlinkSync(abs);
          } catch {
            break;
          }
          rel = resolveLinkInImage(rel, target);
          continue;
        }
        const raw = await readCapped(abs, 64 * 1024, true);
        if (typeof raw === "string") {
          this.note(p.layer, rel, raw);
          break;
        }
        const os = parseOsRelease(raw.toString("utf8"));
        if (os !== undefined) return os;
        this.note(p.layer, rel, "os-release without ID");
        break;
      }
    }
    return undefined;
  }

  async run(): Promise<ImageInventory> {
    const searches = this.fs.map((fs) => new LayerSearch(fs, this.caps));
    await Promise.all(searches.map((s) => s.run()));
    const dbs = new Map<string, DbKind>();
    searches.forEach((s, L) => {
      for (const [rel, kind] of s.found) dbs.set(rel, kind);
      if (s.stoppedAt !== undefined) this.note(L, s.stoppedAt.path, s.stoppedAt.reason);
    });
    // One batch of xattr reads for everything (each batch is a child process).
    await this.learnOpaque([...dbs.keys(), ...OS_RELEASE_PATHS]);
    const packages: Package[] = [];
    let n = 0;
    for (const [rel, kind] of dbs) {
      await this.attribute(rel, kind, packages);
      // Many small files: let other work in the agent run now and then.
      if (++n % 256 === 0) await new Promise((r) => setImmediate(r));
    }
    const os = await this.osRelease();
    const partial = [...this.notes.values()].sort((a, b) => {
      const la = this.layers.findIndex((l) => l.diffId === a.layerId);
      const lb = this.layers.findIndex((l) => l.diffId === b.layerId);
      return la - lb || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
    });
    return { packages: dedupe(packages), ...(os !== undefined ? { os } : {}), partial };
  }
}

/** The same package recorded twice in one database (one per architecture): keep the earliest layer. */
function dedupe(packages: Package[]): Package[] {
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

/**
 * The packages installed in an image whose layers (bottom first) are these directories, each
 * attributed to the layer where its final version arrived. Throws NotFound when a layer directory
 * is missing (the image was removed); anything unreadable inside the layers lands in `partial`.
 */
export async function inventoryOf(layers: InventoryLayer[], options: InventoryOptions = {}): Promise<ImageInventory> {
  if (layers.length === 0) return { packages: [], partial: [] };
  for (const l of layers) {
    let ok = false;
    try {
      ok = statSync(l.dir).isDirectory();
    } catch {
      ok = false;
    }
    if (!ok) throw new ShadowError(Code.NotFound, `layer ${l.diffId}: ${l.dir} is not a directory`);
  }
  const caps: InventoryCaps = { ...DEFAULT_INVENTORY_CAPS, ...options.caps };
  return new InventoryRun(layers, caps, options.readOpaqueXattrs ?? readOpaqueXattrs).run();
}
