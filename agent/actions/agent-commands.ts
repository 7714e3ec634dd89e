/**
 * The agent's real command handler: PrepareShadow creates shadow containers; Switchover and
 * Rollback run the switchover state machine (answered UNIMPLEMENTED by an agent built without
 * one). Prepares on one original are serialised (a prepare and the original's removal never
 * interleave); the machine refuses a second switchover of a container itself.
 */
import { readFile } from "node:fs/promises";
import { readRegistryAuth, RegistryClient } from "../../common/registry-client.js";
import { fetchSignature } from "../../common/registry-signature.js";
import type Docker from "dockerode";
import { CommandStatus, type PrepareShadow, type Rollback, type Switchover } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import { isEngineNotFound } from "../../common/engine.js";
import { Code, ShadowError } from "../../common/errors.js";
import { unimplemented, type CommandHandler, type CommandOutcome } from "./command-handler.js";
import { prepareShadow, type PrepareShadowOptions, type RegistryCredentials, type StoredSignatureReader } from "./prepare-shadow.js";
import { ShadowContainers } from "./shadow-containers.js";
import type { SwitchoverMachine } from "./switchover/switchover-machine.js";

/** A container's id, id prefix or name, as the engine's API takes it in a path. */
const CONTAINER_REF = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/;

export type AgentCommandsOptions = Omit<PrepareShadowOptions, "shadows"> & { switchovers?: SwitchoverMachine };

export class AgentCommands implements CommandHandler {
  readonly shadows: ShadowContainers;
  private readonly o: PrepareShadowOptions;
  private readonly switchovers: SwitchoverMachine | undefined;
  /** The tail of the work queued per original container id. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(o: AgentCommandsOptions) {
    this.shadows = new ShadowContainers(o.docker, o.log);
    const { switchovers, ...prepare } = o;
    this.o = { ...prepare, shadows: this.shadows };
    this.switchovers = switchovers;
  }

  async prepareShadow(action: PrepareShadow, id: string): Promise<CommandOutcome> {
    const none: CommandOutcome = { status: CommandStatus.REJECTED, message: `no container ${JSON.stringify(action.containerId.slice(0, 100))} on this node` };
    if (!CONTAINER_REF.test(action.containerId)) return none;
    let original: Docker.ContainerInspectInfo;
    try {
      original = await this.o.docker.getContainer(action.containerId).inspect();
    } catch (err) {
      if (isEngineNotFound(err)) return none;
      throw err;
    }
    return this.serial(original.Id, () => prepareShadow(action, id, this.o, original));
  }

  switchover(action: Switchover, id: string): Promise<CommandOutcome> {
    return this.switchovers?.switchover(action, id) ?? Promise.resolve(unimplemented("switchover"));
  }

  rollback(action: Rollback, id: string): Promise<CommandOutcome> {
    return this.switchovers?.rollback(action, id) ?? Promise.resolve(unimplemented("rollback"));
  }

  /** A container was removed from the engine: the shadows it had go too (never rejects). */
  originalGone(id: string): Promise<void> {
    return this.serial(id, () => this.shadows.originalGone(id)).then(
      () => undefined,
      (err: unknown) => this.o.log.warn({ container: id, err: String(err) }, "cannot remove the shadows of a removed container"),
    );
  }

  /** At agent start: shadows whose original went away meanwhile are removed (never rejects). */
  async sweep(): Promise<void> {
    try {
      const n = await this.shadows.sweep();
      if (n > 0) this.o.log.info({ removed: n }, "shadow containers of removed originals removed");
    } catch (err) {
      this.o.log.warn({ err: String(err) }, "cannot check the shadow containers");
    }
  }

  private serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.queues.get(key) ?? Promise.resolve()).then(fn, fn);
    const tail = next.catch(() => undefined);
    this.queues.set(key, tail);
    void tail.then(() => {
      if (this.queues.get(key) === tail) this.queues.delete(key);
    });
    return next;
  }
}

/**
 * The registry files the agent is given: credentials (`username:password` on the first line) and
 * a CA to trust; read once at start, so a bad file stops the agent with its name.
 */
export async function readRegistryFiles(authFile: string | undefined, caFile: string | undefined): Promise<{ auth?: RegistryCredentials; ca?: Buffer }> {
  let ca: Buffer | undefined;
  if (caFile !== undefined) {
    try {
      ca = await readFile(caFile);
    } catch (err) {
      throw new ShadowError(Code.InvalidArgument, `cannot read the registry CA ${caFile}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }
  const auth = authFile === undefined ? undefined : await readRegistryAuth(authFile);
  return { ...(auth !== undefined ? { auth } : {}), ...(ca !== undefined ? { ca } : {}) };
}

/** Reads a shadow's stored signature from its registry (cosign layout), one short-lived client per read. */
export const registrySignatures: StoredSignatureReader = async (at, manifestDigest) => {
  const c = new RegistryClient({ host: at.host, ...(at.ca !== undefined ? { ca: at.ca } : {}), ...(at.auth !== undefined ? { auth: at.auth } : {}) });
  try {
    return await fetchSignature(c, at.repository, manifestDigest);
  } finally {
    c.close();
  }
};
