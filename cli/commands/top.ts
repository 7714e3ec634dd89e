import type { Command } from "commander";
import type { WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { action, out, runtime } from "../action.js";
import { clientOptions, filterOptions, type FilterFlags } from "../options.js";

export function registerTop(program: Command): void {
  filterOptions(clientOptions(program.command("top").description("per-layer CPU, memory, I/O, execs and connections, live from the latest telemetry windows (Ctrl-C stops)")))
    .option("--once", "print the latest windows once and exit")
    .option("--json", "one JSON object per window (with --once: a JSON array)").action(action(top));
}

async function top(o: FilterFlags & { once?: boolean }): Promise<void> {
  const { QueryService, callServerStream, connect, follow, renderTop, windowJson } = await runtime();
  const c = await connect(o);
  const latest = new Map<string, WindowSummary>();
  let live = false;
  let timer: NodeJS.Timeout | undefined;
  const tty = process.stdout.isTTY === true;
  const draw = () => {
    timer = undefined;
    const text = renderTop([...latest.values()]);
    if (tty) process.stdout.write("\x1b[H\x1b[2J");
    out(`shadowlayer top  ${new Date().toISOString().slice(11, 19)}  ${latest.size} containers (per-layer figures over each container's latest window)`);
    out(text);
    if (!tty) out("");
  };
  const stream = callServerStream(c.client, QueryService.method.watchTelemetry, { container: o.container ?? "", node: o.node ?? "" });
  stream.on("data", (ev) => {
    const b = ev.body;
    if (b.case === "window") {
      latest.set(b.value.containerId, b.value);
      if (o.json && !o.once) out(JSON.stringify(windowJson(b.value)));
      else if (live && !o.json) timer ??= setTimeout(draw, 200);
    } else if (b.case === "resync") {
      // Windows were dropped while this client did not read: the latest ones follow again.
      latest.clear();
      live = false;
    } else if (b.case === "snapshotDone") {
      live = true;
      if (o.once) {
        out(o.json ? JSON.stringify([...latest.values()].map(windowJson), null, 2) : renderTop([...latest.values()]));
        stream.cancel();
        c.client.close();
        return;
      }
      if (!o.json) draw();
    }
  });
  follow(c, stream, { untilSignal: !o.once });
}
