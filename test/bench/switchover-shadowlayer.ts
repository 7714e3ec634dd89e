/**
 * The shadowlayer scenario: the agent, in this process (no TLS, no aggregator, its own data
 * directory), manages a service labelled with a stable address; clients reach it through the
 * agent's proxy there. Each replacement is a Switchover command through the agent's journal to a
 * shadow prepared beforehand (off the clock) by PrepareShadow, from the other local-only image,
 * signed by a key made for this run. A rollback brings the previous container back. `close()`
 * stops the agent and removes the containers and snapshot images it made, also after a failure
 * halfway through the start.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type Docker from "dockerode";
import { startAgent, type RunningAgent } from "../../agent/agent.js";
import { LOCAL_REFERENCE } from "../../agent/actions/prepare-shadow.js";
import { SERVICE_LABELS } from "../../agent/actions/switchover/service-labels.js";
import { SNAPSHOT_LABELS } from "../../agent/actions/switchover/switchover-machine.js";
import { generateSigningKeys, signingPayload, signPayload } from "../../common/cosign.js";
import { silentLogger } from "../../common/log.js";
import { CommandSchema, CommandStatus, PrepareShadowSchema, type CommandResult } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { SwitchoverOutcome, SwitchoverTrigger, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { TEST_LABEL, waitFor } from "../harness/engine.js";
// Below the ephemeral range: the load's own connections never hold a service's port.
import { freePort } from "../harness/switchover-services.js";
import { median } from "./common.js";
import { tokenRequest } from "./switchover-load.js";
import { runService, type Replaceable } from "./switchover-peers.js";

export interface ShadowlayerService extends Replaceable {
  /** Rolls the last switchover back: the container it replaced serves again. */
  rollback(): Promise<void>;
  /** The median duration (ms) of each step over the switchovers and over the rollbacks so far, from the agent's records. */
  stepMedians(): { switchover: Record<string, number>; rollback: Record<string, number> };
}

function medians(records: readonly (SwitchoverRecord | undefined)[]): Record<string, number> {
  const by = new Map<string, number[]>();
  for (const r of records) for (const st of r?.steps ?? []) by.set(st.name, [...(by.get(st.name) ?? []), st.durationMs]);
  return Object.fromEntries([...by].map(([name, ms]) => [name, Math.round(median(ms))]));
}

/**
 * The bounds each switchover runs with. The observation window is short: the next switchover
 * stops this one's shadow (it is the next one's original), which a window still watching it
 * would take for a failure and roll back. The benchmark waits for the window to end.
 */
const SWITCH_BOUNDS = { healthTimeoutMs: 10_000, drainTimeoutMs: 2_000, observeMs: 300 };

export async function startShadowlayerService(docker: Docker, images: readonly [string, string], port: number, log: (l: string) => void): Promise<ShadowlayerService> {
  const run = `${process.pid}-${randomBytes(3).toString("hex")}`;
  const dir = await mkdtemp(join(tmpdir(), "sl-bench-switchover-"));
  const keys = generateSigningKeys();
  let agent: RunningAgent | undefined;
  const snapshots = new Set<string>();
  let seq = 0;
  const nextId = () => `bench-${run}-${seq++}`;
  const ok = (r: CommandResult, what: string): CommandResult => {
    if (r.status !== CommandStatus.OK) throw new Error(`${what}: ${CommandStatus[r.status]}: ${r.message}`);
    if (r.switchover?.snapshotImage) snapshots.add(r.switchover.snapshotImage);
    return r;
  };

  const close = async () => {
    await agent?.stop().catch((err: unknown) => log(`cannot stop the agent: ${String(err)}`));
    // The originals, the shadows (they carry the originals' labels) and what the agent recreated.
    const mine = await docker.listContainers({ all: true, filters: { label: [`${SERVICE_LABELS.address}=127.0.0.1:${port}`] } }).catch(() => []);
    for (const c of mine) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
    // Snapshot images: those the answers named, and any other a switchover of this run committed.
    const labelled = await docker.listImages({ filters: { label: [SNAPSHOT_LABELS.switchover] } }).catch(() => []);
    for (const i of labelled) if (i.Labels?.[SNAPSHOT_LABELS.switchover]?.startsWith(`bench-${run}-`) === true) snapshots.add(i.Id);
    for (const s of snapshots) await docker.getImage(s).remove({ force: true }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const keyFile = join(dir, "cosign.pub");
    await writeFile(keyFile, keys.publicKeyPem);
    agent = await startAgent({
      node: `bench-${run}`,
      dataDir: join(dir, "agent"),
      execSource: "proc",
      inventory: false,
      signingKeyPub: keyFile,
      tls: "insecure",
      // Other services on this engine (other runs' tests) are not this agent's to serve.
      serviceFilter: (labels) => labels[SERVICE_LABELS.address] === `127.0.0.1:${port}`,
      log: silentLogger(),
    });
    const [p1, p2] = [await freePort(), await freePort()];
    const original = await runService(docker, images[0], p1, `sl-bench-shadowlayer-${run}`, {
      [SERVICE_LABELS.address]: `127.0.0.1:${port}`,
      [SERVICE_LABELS.port]: String(p1),
      [SERVICE_LABELS.shadowPort]: String(p2),
      [SERVICE_LABELS.health]: "tcp",
      [TEST_LABEL]: String(process.pid),
    });
    /** The container serving now, the image it runs (index), and what the last switchover replaced. */
    let current = (await original.inspect()).Id;
    let running = 0;
    let replaced: string | undefined;
    let shadow: string | undefined;
    const switchovers: string[] = [];
    const rollbacks: string[] = [];
    const lastSwitchover = () => switchovers.at(-1) ?? "";

    /** The last switchover, until its observation window ended. */
    let observed: string | undefined;
    let lastRollback: string | undefined;
    /** A record's steps and their durations, for the progress lines. */
    const stepsLine = (id: string) => (agent?.switchovers.get(id)?.steps ?? []).map((st) => `${st.name} ${Math.round(st.durationMs)} ms`).join(", ");
    const a = agent;

    const prepare = async () => {
      const image = images[(running + 1) % 2]!;
      const payload = signingPayload({ dockerReference: LOCAL_REFERENCE, digest: image });
      const action = create(PrepareShadowSchema, { containerId: current, shadowImage: image, imageId: image, localOnly: true, signaturePayload: payload, signature: signPayload(payload, keys.privateKeyPem), jobId: `bench-${run}`, reason: "bench" });
      const r = ok(await a.journal.run(create(CommandSchema, { id: nextId(), action: { case: "prepareShadow", value: action } })), "PrepareShadow");
      shadow = r.shadowContainerId;
    };
    await prepare();
    // The stable address answers once the agent's proxy serves the managed service.
    await waitFor("the agent's proxy on the stable address", async () => ((await tokenRequest(port, 1_000)) !== undefined ? true : undefined), 20_000, 100);

    return {
      name: "shadowlayer",
      port,
      replace: async () => {
        const id = nextId();
        const r = ok(await a.switchover({ containerId: current, shadowContainerId: shadow ?? "", shadowImage: images[(running + 1) % 2]!, reason: "bench", trigger: SwitchoverTrigger.MANUAL, ...SWITCH_BOUNDS }, id), "Switchover");
        replaced = current;
        current = r.switchover?.shadowContainerId || shadow || current;
        running = (running + 1) % 2;
        shadow = undefined;
        observed = id;
        switchovers.push(id);
      },
      rollback: async () => {
        if (replaced === undefined) throw new Error("nothing to roll back");
        const r = ok(await a.rollback({ containerId: replaced, switchoverId: lastSwitchover(), reason: "bench", trigger: SwitchoverTrigger.MANUAL }, nextId()), "Rollback");
        lastRollback = r.switchover?.id;
        if (lastRollback !== undefined) rollbacks.push(lastRollback);
        current = replaced;
        replaced = undefined;
        running = (running + 1) % 2;
        shadow = undefined;
      },
      // Off the clock, under load (its gaps count): the observation window ends, the next shadow is prepared.
      settle: async () => {
        const id = observed;
        if (id !== undefined) {
          const outcome = await waitFor(
            "the switchover's observation window to end",
            () => {
              const o = a.switchovers.get(id)?.outcome;
              return o === undefined || o === SwitchoverOutcome.RUNNING || o === SwitchoverOutcome.OBSERVING ? undefined : o;
            },
            15_000,
            20,
          );
          if (outcome !== SwitchoverOutcome.SUCCEEDED) throw new Error(`switchover ${id} ended ${SwitchoverOutcome[outcome]}: ${a.switchovers.get(id)?.error ?? ""}`);
          log(`  steps: ${stepsLine(id)}`);
          observed = undefined;
        }
        if (lastRollback !== undefined) log(`  rollback steps: ${stepsLine(lastRollback)}`);
        lastRollback = undefined;
        if (shadow === undefined) await prepare();
      },
      stepMedians: () => ({ switchover: medians(switchovers.map((id) => a.switchovers.get(id))), rollback: medians(rollbacks.map((id) => a.switchovers.get(id))) }),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
