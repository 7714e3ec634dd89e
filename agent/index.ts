/**
 * The agent's public face: what the CLI (and anything else outside agent/) may import.
 */
export { defaultNodeName, startAgent, type AgentOptions, type RunningAgent } from "./agent.js";
export type { ExecSourceChoice } from "./telemetry/telemetry.js";
export type { CommandHandler, CommandOutcome } from "./actions/command-handler.js";
export type { StoredSignatureReader, SignatureLocation, RegistryCredentials } from "./actions/prepare-shadow.js";
// The agent program's configuration (flags → environment → defaults), for the CLI.
export { resolveAgentConfig, type AgentConfig, type AgentFlags } from "./config.js";
// Switchover: the machine's bounds, its records (what the link sends), the snapshot labels.
export { DEFAULT_SWITCHOVER_BOUNDS, SNAPSHOT_LABELS, type SwitchoverBounds } from "./actions/switchover/switchover-machine.js";
export type { SwitchoverRecords } from "./actions/switchover/switchover-records.js";
