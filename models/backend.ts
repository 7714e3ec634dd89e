/**
 * Picks the tfjs backend the anomaly model runs on: tfjs-node when it loads (an optional native
 * dependency that cannot install offline, so it is imported by a variable name and never compiled
 * against), else the WebAssembly backend (SIMD when the runtime has it), else the plain JS CPU
 * backend. The choice and why are kept so they can be logged, exported and shown.
 */

import { createRequire } from "node:module";
import path from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import type { BackendChoice, BackendName } from "./types.js";

/** tfjs's own backend name for each of ours. */
const TF_NAME: Record<BackendName, string> = { node: "tensorflow", wasm: "wasm", cpu: "cpu" };
/** The optional native package, named by a variable so the compiler does not look for it. */
const NODE_PACKAGE: string = "@tensorflow/tfjs-node";

let active: BackendChoice | undefined;
let pending: Promise<BackendChoice> | undefined;
let wasmPathsSet = false;

function message(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split("\n")[0]!.slice(0, 200);
}

async function tryNode(): Promise<string> {
  await import(NODE_PACKAGE);
  if (!(await tf.setBackend(TF_NAME.node))) throw new Error("the tensorflow backend did not initialise");
  return "loaded";
}

async function tryWasm(): Promise<string> {
  if (!wasmPathsSet) {
    const main = createRequire(import.meta.url).resolve("@tensorflow/tfjs-backend-wasm");
    setWasmPaths(path.dirname(main) + path.sep);
    wasmPathsSet = true;
  }
  if (!(await tf.setBackend(TF_NAME.wasm))) throw new Error("the wasm backend did not initialise");
  return tf.env().getBool("WASM_HAS_SIMD_SUPPORT") ? "loaded (simd)" : "loaded (no simd)";
}

async function tryCpu(): Promise<string> {
  if (!(await tf.setBackend(TF_NAME.cpu))) throw new Error("the cpu backend did not initialise");
  return "loaded";
}

const TRY: Record<BackendName, () => Promise<string>> = { node: tryNode, wasm: tryWasm, cpu: tryCpu };

async function choose(prefer: BackendName | "auto"): Promise<BackendChoice> {
  // Production mode: no per-op debug checks, and no "install tfjs-node" banner on every worker start.
  tf.enableProdMode();
  const order: BackendName[] = prefer === "auto" ? ["node", "wasm", "cpu"] : [prefer, ...(["wasm", "cpu"] as const).filter((b) => b !== prefer)];
  const notes: string[] = [];
  for (const name of order) {
    try {
      notes.push(`${name === "node" ? "tfjs-node" : name}: ${await TRY[name]()}`);
      await tf.ready();
      return { name, reason: notes.join("; ") };
    } catch (err) {
      notes.push(`${name === "node" ? "tfjs-node" : name}: ${message(err)}`);
    }
  }
  throw new Error(`no tfjs backend could start (${notes.join("; ")})`);
}

/**
 * Starts the backend (once; later calls return the same choice unless they name another backend,
 * which is then switched to). `auto` is tfjs-node, else wasm, else cpu; a named backend that fails
 * falls back in the same order.
 */
export async function initBackend(prefer: BackendName | "auto" = "auto"): Promise<BackendChoice> {
  if (pending) {
    const current = await pending;
    if (prefer === "auto" || prefer === current.name) return current;
  }
  pending = choose(prefer);
  try {
    active = await pending;
    return active;
  } catch (err) {
    pending = undefined;
    throw err;
  }
}

/** The backend in use, once initBackend() has finished. */
export function activeBackend(): BackendChoice | undefined {
  return active;
}
