/**
 * A recipe's build context: where an image's labels say it is, confined to the configured recipe
 * roots, and packed as the tar the Engine build API takes. The labels are hostile (the image chose
 * them): the directory must resolve (symlinks followed) inside a root, the Dockerfile inside the
 * directory, and the tar is bounded in entries and bytes before anything is sent.
 */
import { constants, realpathSync, statSync } from "node:fs";
import { lstat, open, readdir, readFile, readlink } from "node:fs/promises";
import { isAbsolute, join, posix, relative, resolve, sep } from "node:path";
import { Readable } from "node:stream";
import * as tar from "tar-stream";
import { Code, ShadowError, errnoCode } from "../../common/errors.js";
import { SOURCE_LABELS } from "./types.js";

/** Where a recipe is, once checked. */
export interface RecipeLocation {
  /** The context directory, symlinks resolved. */
  contextDir: string;
  /** The recipe root it lies in, symlinks resolved. */
  root: string;
  /** The Dockerfile's path inside the context (posix, symlinks resolved). */
  dockerfile: string;
}

export interface ContextBounds {
  /** Files, directories and symlinks. */
  maxEntries: number;
  /** Bytes of file content. */
  maxBytes: number;
}

/** A recipe context is source code, not a data set: these are far above a real one and far below a disk. */
export const DEFAULT_CONTEXT_BOUNDS: ContextBounds = { maxEntries: 20_000, maxBytes: 512 * 1024 * 1024 };
const MAX_LABEL = 4096;

function refused(why: string): ShadowError {
  return new ShadowError(Code.PermissionDenied, why);
}

/** `p` is `dir` or below it (both resolved). */
function isInside(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

function realOrThrow(p: string, what: string): string {
  try {
    return realpathSync(p);
  } catch (err) {
    throw new ShadowError(Code.NotFound, `${what} ${JSON.stringify(p)} cannot be resolved (${errnoCode(err) ?? String(err)})`, { cause: err });
  }
}

/**
 * The recipe the labels name, checked against `roots`. A relative context label is taken under
 * each root in turn. Throws FailedPrecondition (no roots), PermissionDenied (outside the roots,
 * or the Dockerfile outside the context), NotFound, or InvalidArgument (a malformed label).
 */
export function resolveRecipe(labels: Readonly<Record<string, string>>, roots: readonly string[]): RecipeLocation {
  const ctxLabel = labels[SOURCE_LABELS.recipeContext];
  if (ctxLabel === undefined || ctxLabel === "") throw new ShadowError(Code.NotFound, `the image has no ${SOURCE_LABELS.recipeContext} label`);
  if (roots.length === 0) {
    throw new ShadowError(Code.FailedPrecondition, `the image names a recipe (${SOURCE_LABELS.recipeContext}) but no --recipe-root is configured, so no recipe is followed`);
  }
  if (ctxLabel.length > MAX_LABEL || ctxLabel.includes("\0")) throw new ShadowError(Code.InvalidArgument, `${SOURCE_LABELS.recipeContext} is not a usable path`);
  // A root that does not exist (yet) is skipped, so one missing mount does not disable the others.
  const realRoots = roots.flatMap((r) => {
    try {
      return [realOrThrow(resolve(r), "recipe root")];
    } catch {
      return [];
    }
  });
  if (realRoots.length === 0) throw new ShadowError(Code.FailedPrecondition, `no recipe root exists (--recipe-root ${roots.join(", ")}), so no recipe is followed`);
  const candidates = isAbsolute(ctxLabel) ? [ctxLabel] : realRoots.map((r) => join(r, ctxLabel));
  let contextDir: string | undefined;
  let lastErr: unknown;
  for (const c of candidates) {
    try {
      contextDir = realOrThrow(c, SOURCE_LABELS.recipeContext);
      break;
    } catch (err) {
      lastErr = err;
    }
  }
  if (contextDir === undefined) throw lastErr;
  const root = realRoots.find((r) => isInside(contextDir, r));
  if (root === undefined) {
    throw refused(`${SOURCE_LABELS.recipeContext}=${JSON.stringify(ctxLabel)} resolves to ${contextDir}, outside every recipe root (${realRoots.join(", ")}): refused`);
  }
  if (!statSync(contextDir).isDirectory()) throw new ShadowError(Code.InvalidArgument, `${SOURCE_LABELS.recipeContext}: ${contextDir} is not a directory`);

  const dfLabel = labels[SOURCE_LABELS.recipeDockerfile] ?? "Dockerfile";
  const normal = posix.normalize(dfLabel);
  if (dfLabel === "" || dfLabel.length > MAX_LABEL || dfLabel.includes("\0") || posix.isAbsolute(normal) || normal === ".." || normal.startsWith("../")) {
    throw refused(`${SOURCE_LABELS.recipeDockerfile}=${JSON.stringify(dfLabel)}: expected a path inside the context directory: refused`);
  }
  const dfReal = realOrThrow(join(contextDir, normal), SOURCE_LABELS.recipeDockerfile);
  if (!isInside(dfReal, contextDir)) {
    throw refused(`${SOURCE_LABELS.recipeDockerfile}=${JSON.stringify(dfLabel)} resolves to ${dfReal}, outside the context ${contextDir}: refused`);
  }
  if (!statSync(dfReal).isFile()) throw new ShadowError(Code.InvalidArgument, `${SOURCE_LABELS.recipeDockerfile}: ${dfReal} is not a file`);
  return { contextDir, root, dockerfile: relative(contextDir, dfReal).split(sep).join("/") };
}

/** One entry of a context, as listed before packing. */
export interface ContextEntry {
  /** posix path inside the context. */
  name: string;
  type: "file" | "directory" | "symlink";
  mode: number;
  mtime: Date;
  size: number;
  linkname?: string;
}

/** One .dockerignore line as a matcher of context paths. */
interface IgnoreRule {
  re: RegExp;
  /** A `!` line: re-includes what an earlier line excluded. */
  include: boolean;
}

const literal = (c: string) => c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

/** A .dockerignore pattern (Go filepath.Match syntax plus `**`) as a regular expression of posix paths. */
function ignorePattern(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === "*" && pattern[i + 1] === "*") {
      i++;
      if (pattern[i + 1] === "/") {
        i++;
        re += "(?:.*/)?";
      } else re += ".*";
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        re += `[${pattern.slice(i + 1, end).replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else if (c === "\\" && i + 1 < pattern.length) re += literal(pattern[++i] as string);
    else re += literal(c);
  }
  // A pattern that names a directory excludes everything below it.
  return new RegExp(`^${re}(?:/.*)?$`);
}

/** The rules of the context's .dockerignore, as the docker CLI reads them (comments, `!` exceptions, cleaned paths). */
async function readIgnore(dir: string): Promise<IgnoreRule[]> {
  let text: string;
  try {
    text = await readFile(join(dir, ".dockerignore"), "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw err;
  }
  const rules: IgnoreRule[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const include = line.startsWith("!");
    if (include) line = line.slice(1).trim();
    line = posix.normalize(line).replace(/^\/+/, "").replace(/\/+$/, "");
    if (line === "" || line === ".") continue;
    rules.push({ re: ignorePattern(line), include });
  }
  return rules;
}

/** Whether the last rule matching `name` excludes it. */
function ignored(rules: readonly IgnoreRule[], name: string): boolean {
  let out = false;
  for (const r of rules) if (r.re.test(name)) out = !r.include;
  return out;
}

/**
 * Every file, directory and symlink under `dir` that its .dockerignore keeps (symlinks listed as
 * links, never followed; sockets, fifos and devices left out), refused as soon as a bound is
 * passed. `keep` (the Dockerfile, .dockerignore) is sent even when ignored, as the docker CLI does.
 */
export async function listContext(dir: string, bounds: ContextBounds = DEFAULT_CONTEXT_BOUNDS, keep: readonly string[] = []): Promise<{ entries: ContextEntry[]; bytes: number; skipped: number }> {
  const entries: ContextEntry[] = [];
  let bytes = 0;
  let skipped = 0;
  const rules = await readIgnore(dir);
  // An ignored directory is not entered unless an exception could re-include something below it.
  const exceptions = rules.some((r) => r.include);
  const always = new Set([...keep, ".dockerignore"]);
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(dir, rel))).sort();
    for (const n of names) {
      const name = rel === "" ? n : `${rel}/${n}`;
      const st = await lstat(join(dir, name));
      if (!always.has(name) && ignored(rules, name)) {
        if (st.isDirectory() && exceptions) await walk(name);
        continue;
      }
      const base = { name, mode: st.mode & 0o7777, mtime: st.mtime, size: 0 };
      if (st.isSymbolicLink()) entries.push({ ...base, type: "symlink", linkname: await readlink(join(dir, name)) });
      else if (st.isDirectory()) entries.push({ ...base, type: "directory" });
      else if (st.isFile()) {
        entries.push({ ...base, type: "file", size: st.size });
        bytes += st.size;
      } else {
        skipped++;
        continue;
      }
      if (entries.length > bounds.maxEntries) {
        throw new ShadowError(Code.FailedPrecondition, `recipe context ${dir} has more than ${bounds.maxEntries} entries (bound: entries)`);
      }
      if (bytes > bounds.maxBytes) {
        throw new ShadowError(Code.FailedPrecondition, `recipe context ${dir} holds more than ${bounds.maxBytes} bytes of files (bound: bytes)`);
      }
      if (st.isDirectory()) await walk(name);
    }
  };
  await walk("");
  return { entries, bytes, skipped };
}

/**
 * The context as a tar stream for buildImage. A file is read through a descriptor opened without
 * following a symlink, and exactly the size listed is sent: one that changed meanwhile fails the
 * pack (the returned stream errors) rather than sending something else.
 */
export function packContext(dir: string, entries: readonly ContextEntry[]): Readable {
  const pack = tar.pack();
  const write = async (): Promise<void> => {
    for (const e of entries) {
      const header = { name: e.name, mode: e.mode, mtime: e.mtime };
      if (e.type === "directory") pack.entry({ ...header, type: "directory" });
      else if (e.type === "symlink") pack.entry({ ...header, type: "symlink", linkname: e.linkname ?? "" });
      else await packFile(pack, join(dir, e.name), { ...header, size: e.size });
    }
    pack.finalize();
  };
  write().catch((err: unknown) => pack.destroy(ShadowError.from(err, Code.BuildFailed)));
  // tar-stream packs are streamx streams; dockerode wants a Node stream.
  return Readable.from(pack as AsyncIterable<Buffer>);
}

async function packFile(pack: tar.Pack, path: string, header: { name: string; mode: number; mtime: Date; size: number }): Promise<void> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== header.size) throw new ShadowError(Code.BuildFailed, `recipe context file ${header.name} changed while it was packed`);
    await new Promise<void>((resolveDone, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolveDone());
      if (header.size === 0) {
        pack.entry(header, Buffer.alloc(0), done);
        return;
      }
      const entry = pack.entry(header, done) as NodeJS.WritableStream;
      const rs = fh.createReadStream({ start: 0, end: header.size - 1, autoClose: false });
      rs.on("data", (chunk) => {
        if (!entry.write(chunk)) rs.pause();
      });
      entry.on("drain", () => rs.resume());
      rs.on("end", () => entry.end());
      rs.on("error", reject);
    });
  } finally {
    await fh.close();
  }
}
