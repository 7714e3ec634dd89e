/**
 * A bounded exec storm in one container, counted from inside it. Workers are busybox shells running
 * `/bin/true` in a loop; a paced storm sleeps with the shell's own `read -t` on a FIFO nobody
 * writes (a builtin, so pacing adds no exec), an unpaced one runs as fast as this machine forks.
 * Only execs that happened are counted: `/bin/true` when it exited 0, each worker's `/bin/sh`,
 * and, before the storm's window, the entrypoint and the one `mkfifo`. The window of the storm is taken from /proc/uptime inside
 * the container, after a 2 s pause that lets the agent learn the container first.
 */
import type Docker from "dockerode";
import { runContainer, waitFor, type TestEngine } from "../harness/engine.js";

export interface StormPlan {
  workers: number;
  /** Execs per second over all workers; undefined runs unpaced. */
  perSecond?: number;
  seconds: number;
}

export interface StormResult {
  container: Docker.Container;
  /** Execs that happened in the container, every one of them counted. */
  execs: number;
  /** The workers' share of `execs` (their shells and their /bin/true), all within `seconds`. */
  workerExecs: number;
  /** From the first worker's start to the last worker's end, by the container's clock. */
  seconds: number;
}

/** Hundredths of a second since boot, in shell (no exec). */
const NOW = "read up x < /proc/uptime; now=${up%.*}${up#*.}";

/**
 * Paced: slots of 100 ms, each worker runs its share of the slot's execs, then sleeps until the
 * slot's end if it is ahead. Stops after its slots or 3x the planned time. Prints its count.
 */
function pacedWorker(perWorkerPerSlot: number, seconds: number): string {
  return [
    `n=0; exec 3<>/tmp/pace; ${NOW}; start=$now; slot=0`,
    `while [ $slot -lt ${seconds * 10} ] && [ $now -lt $((start + ${seconds * 300})) ]; do`,
    `  i=0; while [ $i -lt ${perWorkerPerSlot} ]; do /bin/true && n=$((n+1)); i=$((i+1)); done; slot=$((slot+1))`,
    `  ${NOW}; ahead=$((start + slot * 10 - now))`,
    "  if [ $ahead -gt 0 ]; then if [ $ahead -ge 10 ]; then t=0.$ahead; else t=0.0$ahead; fi; read -t $t x <&3; fi",
    "done; echo execs=$((n+1))",
  ].join("\n");
}

/** Unpaced: as fast as it goes for `seconds`, at most 100,000 execs. */
function unpacedWorker(seconds: number): string {
  return [`n=0; ${NOW}; end=$((now + ${seconds * 100}))`, `while [ $n -lt 100000 ] && [ $now -lt $end ]; do /bin/true && n=$((n+1)); ${NOW}; done; echo execs=$((n+1))`].join("\n");
}

export async function runStorm(eng: TestEngine, plan: StormPlan): Promise<StormResult> {
  let worker: string;
  if (plan.perSecond === undefined) {
    worker = unpacedWorker(plan.seconds);
  } else {
    const perSlot = plan.perSecond / 10 / plan.workers;
    if (!Number.isInteger(perSlot) || perSlot < 1) throw new Error(`${plan.perSecond}/s does not split into 100 ms slots over ${plan.workers} workers`);
    worker = pacedWorker(perSlot, plan.seconds);
  }
  if (worker.includes("'")) throw new Error("a worker script must not hold a single quote");
  const workers = Array.from({ length: plan.workers }, (_, i) => i + 1).join(" ");
  const cmd = [
    `W='${worker}'`,
    "echo setup=1; /bin/busybox mkfifo /tmp/pace && echo setup=1; exec 3<>/tmp/pace; read -t 2 x <&3",
    `${NOW}; echo t0=$now`,
    `for w in ${workers}; do /bin/sh -c "$W" & done; wait`,
    `${NOW}; echo t1=$now`,
  ].join("\n");
  const container = await runContainer(eng.docker, eng.base, ["/bin/sh", "-c", cmd]);
  await waitFor("the storm to end", async () => ((await container.inspect()).State.Running ? undefined : true), (plan.seconds * 3 + 60) * 1000, 250);
  const logs = (await container.logs({ stdout: true, stderr: true })).toString("latin1");
  const sum = (re: RegExp) => [...logs.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  const workerExecs = sum(/execs=(\d+)/g);
  const t0 = Number(/t0=(\d+)/.exec(logs)?.[1]);
  const t1 = Number(/t1=(\d+)/.exec(logs)?.[1]);
  if (!Number.isFinite(t0) || !Number.isFinite(t1) || t1 <= t0) throw new Error(`the storm printed no times: ${logs.slice(-500)}`);
  return { container, execs: workerExecs + sum(/setup=(\d+)/g), workerExecs, seconds: (t1 - t0) / 100 };
}
