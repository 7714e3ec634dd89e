/**
 * The aggregator's public face: what the CLI (and anything else outside aggregator/) may import.
 */
export { startAggregator, type AggregatorOptions, type RunningAggregator } from "./server.js";
export { parseFeedFlags, type FeedConfig } from "./feeds/feed-config.js";
export { parsePolicies, policyFromInit, type PolicyInit } from "./risk/policy-schema.js";
export { summarize } from "./api/query-service.js";
// The aggregator program's configuration (flags → environment → defaults), for the CLI.
export { resolveAggregatorConfig, type AggregatorConfig, type AggregatorFlags } from "./config.js";
// What every switchover trigger asks (RunningAggregator.control) and the records it keeps.
export type { RollbackAsk, SwitchoverAsk, SwitchoverRecordsView, SwitchoverRequester } from "./control/types.js";
// The Falco alert intake (the aggregator starts it from `falco` options; tests and tools may alone).
export { startFalcoIntake, DEFAULT_FALCO_PATH, type FalcoIntake, type FalcoIntakeDeps, type FalcoIntakeOptions } from "./control/falco-intake.js";
