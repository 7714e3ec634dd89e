/**
 * The real scoring worker with a fault switch for the pool tests: when the file named by
 * SL_TEST_WORKER_FLAG exists at a score task, it is removed and the worker exits ("exit") or
 * spins forever ("hang") instead of answering. Only the test's pool runs this script.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { parentPort } from "node:worker_threads";

const flag = process.env["SL_TEST_WORKER_FLAG"];
// Registered before the real worker's listener, so it sees each task first.
parentPort?.on("message", (t: { type: string }) => {
  if (t.type !== "score" || flag === undefined || !existsSync(flag)) return;
  const fault = readFileSync(flag, "utf8");
  rmSync(flag);
  if (fault === "exit") process.exit(3);
  if (fault === "hang") while (flag !== "") Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
});
await import("../../agent/scoring/scoring-worker.js");
