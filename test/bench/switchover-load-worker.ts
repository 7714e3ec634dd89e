/**
 * The load's clients (switchover-load.ts), in a worker thread: paced requests until the bounds or
 * a "stop" message, each sample posted as it ends with times on the shared clock
 * (performance.timeOrigin + now(): the threads' performance.now() origins differ).
 */
import { parentPort, workerData } from "node:worker_threads";
import { tokenRequest, type LoadMessage, type LoadOptions } from "./switchover-load.js";

const { port, o } = workerData as { port: number; o: LoadOptions };
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let stopped = false;
parentPort?.on("message", (m: unknown) => {
  if (m === "stop") stopped = true;
});
const post = (m: LoadMessage) => parentPort?.postMessage(m);

const t0 = performance.now();
let started = 0;
async function client(): Promise<void> {
  while (!stopped && started < o.maxRequests && performance.now() - t0 < o.maxSeconds * 1000) {
    started++;
    const start = now();
    const token = await tokenRequest(port, o.timeoutMs);
    const end = now();
    post({ sample: { start, end, ok: token !== undefined, token } });
    const wait = o.paceMs - (end - start);
    if (wait > 0) await sleep(wait);
  }
}
await Promise.all(Array.from({ length: o.clients }, client));
post({ done: true });
parentPort?.close();
