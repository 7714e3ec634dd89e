#!/usr/bin/env node
/**
 * The `shadowlayer` command. Output for people by default, `--json` for machines; logs go to
 * stderr; errors print one sentence and exit non-zero. Each command lives in commands/; the ones
 * that run the agent or the aggregator load them only when they run.
 */
import "./v8-flags.js";
import { Command } from "commander";
import { VERSION } from "../common/version.js";
import { registerAgent } from "./commands/agent.js";
import { registerAgents } from "./commands/agents.js";
import { registerAggregator } from "./commands/aggregator.js";
import { registerCerts } from "./commands/certs.js";
import { registerContainers } from "./commands/containers.js";
import { registerDemo } from "./commands/demo.js";
import { registerDetections } from "./commands/detections.js";
import { registerFeeds } from "./commands/feeds.js";
import { registerGraph } from "./commands/graph.js";
import { registerHistory } from "./commands/history.js";
import { registerPolicy } from "./commands/policy.js";
import { registerSbom } from "./commands/sbom.js";
import { registerRebuilds } from "./commands/rebuilds.js";
import { registerRollback } from "./commands/rollback.js";
import { registerScores } from "./commands/scores.js";
import { registerSwitchover } from "./commands/switchover.js";
import { registerTop } from "./commands/top.js";
import { registerTrain } from "./commands/train.js";
import { registerUp } from "./commands/up.js";
import { registerVulns } from "./commands/vulns.js";
import { registerWatch } from "./commands/watch.js";
import { registerWindows } from "./commands/windows.js";

const program = new Command()
  .name("shadowlayer")
  .description("Layer graphs, per-layer risk and ready shadow containers for a Docker host.\nStart with `shadowlayer up`, then `shadowlayer demo` and `shadowlayer graph <container>`.")
  .version(VERSION)
  .showHelpAfterError();

// In the order `--help` lists them.
for (const register of [registerUp, registerAggregator, registerAgent, registerGraph, registerContainers, registerWatch, registerTop, registerWindows, registerDetections, registerAgents, registerScores, registerVulns, registerSbom, registerFeeds, registerRebuilds, registerSwitchover, registerRollback, registerHistory, registerTrain, registerPolicy, registerCerts, registerDemo]) {
  register(program);
}

await program.parseAsync(process.argv);
