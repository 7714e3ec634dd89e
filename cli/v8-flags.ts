/**
 * Imported first by the CLI. The agent runs code on slow timers (a window every 10 s, a full pass
 * every minute); V8's default of flushing the bytecode of functions idle across a few GCs made it
 * recompile them each time, which measured as about a third of the agent's idle CPU.
 */
import { setFlagsFromString } from "node:v8";

setFlagsFromString("--no-flush-bytecode");
