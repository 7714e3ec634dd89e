/**
 * Input from outside (a flag, a file, an RPC) checked against a zod schema, every problem reported
 * with the place it is at (`policies[2].rebuild_threshold: expected a number from 0 to 100, got
 * 140`), so the one who wrote the input can find it.
 */
import type { z } from "zod";
import { Code, ShadowError } from "./errors.js";

/** At most this many problems are listed in one message; the rest are counted. */
const MAX_LISTED = 5;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A value as a message shows it: short, and unambiguous about its type. */
export function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}…` : v);
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint" || v === null) return String(v);
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/** A zod error function: "expected <what>, got <value>", or "missing" when there is no value. */
export function expected(what: string): (issue: { input?: unknown }) => string {
  return (issue) => (issue.input === undefined ? `missing (expected ${what})` : `expected ${what}, got ${describeValue(issue.input)}`);
}

/** `root[2].key["odd.key"]` for a zod issue path. */
export function keyPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else if (typeof p === "string" && IDENTIFIER.test(p)) out += out === "" ? p : `.${p}`;
    else out += `[${JSON.stringify(String(p))}]`;
  }
  return out;
}

/** One line per problem; an unknown key is named by its own path. */
function describeIssues(issues: readonly z.core.$ZodIssue[], root: string): string[] {
  const out: string[] = [];
  for (const i of issues) {
    if (i.code === "unrecognized_keys") for (const k of i.keys) out.push(`${keyPath(root, [...i.path, k])}: ${i.message}`);
    else out.push(`${keyPath(root, i.path)}: ${i.message}`);
  }
  return out;
}

/**
 * Parses `input` with `schema` or throws InvalidArgument naming each problem's place. `root` names
 * the input itself (e.g. `policies`), `source` where it came from (e.g. `--policies p.json`).
 */
export function parseWithSchema<S extends z.ZodType>(schema: S, input: unknown, root: string, source?: string): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const lines = describeIssues(r.error.issues, root);
  const more = lines.length > MAX_LISTED ? `; and ${lines.length - MAX_LISTED} more` : "";
  const text = lines.slice(0, MAX_LISTED).join("; ") + more;
  throw new ShadowError(Code.InvalidArgument, source === undefined ? text : `${source}: ${text}`, { cause: r.error });
}
