/**
 * The shadowlayer scenario: placeholder until the agent's switchover lands.
 */
import type Docker from "dockerode";
import type { Replaceable } from "./switchover-peers.js";

export interface ShadowlayerService extends Replaceable {
  rollback(): Promise<void>;
}

export function startShadowlayerService(_docker: Docker, _images: readonly [string, string], _port: number, _log: (l: string) => void): Promise<ShadowlayerService> {
  return Promise.reject(new Error("the agent does not perform switchovers in this build"));
}
