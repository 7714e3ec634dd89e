/**
 * The packages an image installs, read from its layers' own directories (no container, no merged
 * mount), each attributed to the layer that introduced the version the image ends up with.
 *
 * Each layer is searched for database files (database-search.ts); for each file found, the
 * overlay model (agent/overlay) gives its view at every layer, whiteouts and opaque directories
 * applied; each layer's copy is parsed once (database-file.ts) and its packages attributed
 * (package-attribution.ts). Databases are read per file: `var/lib/dpkg/status` and
 * `lib/apk/db/installed` are each one database that any layer changing it replaces whole;
 * `status.d/*`, `package.json` and `METADATA` are one package per file. Whatever cannot be read
 * (a database, an opaque xattr, a search past its cap) is named in `partial`.
 *
 * Layers are searched one after another under one budget for the whole image (scan-budget.ts);
 * once it is spent, the layers not searched and the databases not read are named in `partial`.
 */
import { statSync } from "node:fs";
import { Code, ShadowError } from "../../common/errors.js";
import type { OpaqueXattrReader } from "../overlay/opaque-xattr.js";
import { OverlayStack } from "../overlay/overlay-stack.js";
import { readDatabase, type ParsedDb } from "./database-file.js";
import { DatabaseSearch, type DbKind } from "./database-search.js";
import { imageOsRelease, OS_RELEASE_PATHS } from "./image-os-release.js";
import { DEFAULT_INVENTORY_CAPS, type InventoryCaps } from "./inventory-caps.js";
import type { OsRelease } from "./os-release.js";
import { attributeDatabase, imagePackages, type DbProvider } from "./package-attribution.js";
import type { Package } from "./package-record.js";
import { DEFAULT_INVENTORY_BUDGET, type InventoryBudget } from "./inventory-budget.js";
import { ScanBudget } from "./scan-budget.js";

export interface InventoryProblem {
  layerId: string;
  path: string;
  reason: string;
}

export interface ImageInventory {
  packages: Package[];
  os?: OsRelease;
  partial: InventoryProblem[];
  /** Set when the image's budget was spent: why (the notes in `partial` say what was left). */
  overBudget?: string;
}

/** A layer, bottom first: its diffID and its own files (overlay2/<cacheId>/diff). */
export interface InventoryLayer {
  diffId: string;
  dir: string;
}

export interface InventoryOptions {
  caps?: Partial<InventoryCaps>;
  /** What the whole image may cost (DEFAULT_INVENTORY_BUDGET for what is not given). */
  budget?: Partial<InventoryBudget>;
  /** Ends the read at its next step (the agent is stopping); what it returns then is incomplete. */
  signal?: AbortSignal;
  /** Reads a directory's overlay opaque xattr (tests replace it). */
  readOpaqueXattr?: OpaqueXattrReader;
}

/** The inventory of one image: search, views, parsing and attribution. */
class InventoryRun {
  private readonly stack: OverlayStack;
  private readonly parsed = new Map<string, Promise<ParsedDb>>();
  private readonly notes = new Map<string, InventoryProblem>();

  constructor(
    private readonly layers: InventoryLayer[],
    private readonly caps: InventoryCaps,
    private readonly budget: ScanBudget,
    readXattr: OpaqueXattrReader | undefined,
  ) {
    this.stack = new OverlayStack(
      layers.map((l) => l.dir),
      readXattr,
    );
  }

  private note(layer: number, rel: string, reason: string): void {
    const layerId = this.layers[layer]?.diffId ?? "";
    const path = rel.startsWith("/") ? rel : `/${rel}`;
    const key = `${layerId}\0${path}\0${reason}`;
    if (!this.notes.has(key)) this.notes.set(key, { layerId, path, reason });
  }

  /** A database's view at every layer: only a file or a symlink there is a copy of it. */
  private views(rel: string): (DbProvider | null)[] {
    return this.stack.views(rel).map((p) => (p !== null && (p.kind === "file" || p.kind === "symlink") ? { layer: p.layer, kind: p.kind } : null));
  }

  private parse(rel: string, kind: DbKind, p: DbProvider): Promise<ParsedDb> {
    const key = `${p.layer}\0${rel}`;
    let parsed = this.parsed.get(key);
    if (parsed === undefined) {
      const abs = this.stack.layers[p.layer]?.abs(rel) ?? "";
      parsed = readDatabase(abs, kind, p.kind, this.caps, this.budget).then(({ db, problem }) => {
        if (problem !== undefined) this.note(p.layer, rel, problem);
        return db;
      });
      this.parsed.set(key, parsed);
    }
    return parsed;
  }

  async run(): Promise<ImageInventory> {
    const dbs = new Map<string, DbKind>();
    for (const [L, fs] of this.stack.layers.entries()) {
      if (!this.budget.maySearch()) {
        this.note(L, "/", `layer not searched: ${this.budget.spent}`);
        continue;
      }
      const s = new DatabaseSearch(fs, this.caps, this.budget);
      await s.run();
      for (const [rel, kind] of s.found) dbs.set(rel, kind);
      if (s.stoppedAt !== undefined) this.note(L, s.stoppedAt.path, s.stoppedAt.reason);
    }
    // Every view up front, os-release's candidates too (its lookup stops at the first found), so
    // each layer whose opaque xattrs could matter has them read, and reported if unreadable.
    for (const rel of [...dbs.keys(), ...OS_RELEASE_PATHS]) {
      this.stack.views(rel);
      await this.budget.pace();
    }
    const diffIds = this.layers.map((l) => l.diffId);
    const packages: Package[] = [];
    let n = 0;
    for (const [rel, kind] of dbs) {
      if (!this.budget.mayRead()) {
        // One note for all of them: naming each of thousands would make the inventory the problem.
        this.note(this.layers.length - 1, "/", `${dbs.size - n} of ${dbs.size} database files not read: ${this.budget.spent}`);
        break;
      }
      packages.push(...(await attributeDatabase(rel, this.views(rel), (p) => this.parse(rel, kind, p), diffIds)));
      n++;
      await this.budget.pace();
    }
    const os = await imageOsRelease(this.stack, (layer, rel, reason) => this.note(layer, rel, reason));
    for (const [layer, p] of this.stack.xattrProblems) this.note(layer, p.rel, `${p.reason}; directories assumed not opaque`);
    const partial = [...this.notes.values()].sort((a, b) => {
      const la = this.layers.findIndex((l) => l.diffId === a.layerId);
      const lb = this.layers.findIndex((l) => l.diffId === b.layerId);
      return la - lb || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
    });
    const overBudget = this.budget.spent;
    return { packages: imagePackages(packages), ...(os !== undefined ? { os } : {}), partial, ...(overBudget !== undefined ? { overBudget } : {}) };
  }
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
  const budget = new ScanBudget({ ...DEFAULT_INVENTORY_BUDGET, ...options.budget }, options.signal);
  return new InventoryRun(layers, caps, budget, options.readOpaqueXattr).run();
}
