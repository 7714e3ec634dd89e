import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type ClientFlags, type JsonFlags } from "../options.js";
import { safeLine } from "../terminal-safe.js";

type RebuildsFlags = JsonFlags & { watch?: boolean; job?: string; image?: string };

/** `rebuilds`: shadow rebuild jobs, the builder pool and where shadows go; `cancel|force|rerun` through AdminService (the admin certificate). */
export function registerRebuilds(program: Command): void {
  const rebuilds = clientOptions(program.command("rebuilds").description("shadow rebuild jobs (state, strategy, progress, each step's timing), the builder pool and where shadows go"))
    .option("--watch", "follow changes (Ctrl-C stops)")
    .option("--json", "JSON (protobuf JSON form; with --watch: one event per line)")
    .option("--job <id>", "one job in detail (id or unique prefix): steps, log tail, preparations")
    .option("--image <ref>", "only the jobs of this source image (id, id prefix or name)")
    .action(action(list));
  clientOptions(rebuilds.command("cancel").argument("<job>", "job id or unique prefix").description("cancel a queued or running job (a running build is stopped); needs the admin certificate")).action(
    action(async (job: string, _o: ClientFlags, cmd: Command) => admin(cmd, "cancelled", (r, o) => r.query(o, r.AdminService.method.cancelRebuild, { job }))),
  );
  clientOptions(rebuilds.command("force").argument("[job]", "job id or unique prefix").description("run a job now, ahead of the queue and its backoff, or plan one for an image; needs the admin certificate"))
    .option("--image <ref>", "plan (or run now) the job of this image (id, id prefix or name)")
    .option("--strategy <name>", "rebase | recipe | restore | patch instead of the one the runner would choose")
    .action(
      action(async (job: string | undefined, _f: unknown, cmd: Command) => {
        // `rebuilds` has an --image of its own, which commander gives it: read both levels.
        const f = cmd.optsWithGlobals<{ image?: string; strategy?: string }>();
        await admin(cmd, "forced", (r, o) => r.query(o, r.AdminService.method.forceRebuild, { job: job ?? "", image: f.image ?? "", strategy: f.strategy ?? "" }));
      }),
    );
  clientOptions(rebuilds.command("rerun").argument("<job>", "job id or unique prefix").description("run a finished, failed or cancelled job again from the start; needs the admin certificate")).action(
    action(async (job: string, _o: ClientFlags, cmd: Command) => admin(cmd, "queued again", (r, o) => r.query(o, r.AdminService.method.rerunRebuild, { job }))),
  );
}

async function list(o: RebuildsFlags): Promise<void> {
  const r = await runtime();
  if (o.watch) {
    const c = await r.connect(o);
    const stream = r.callServerStream(c.client, r.QueryService.method.watchRebuilds, {});
    stream.on("data", (ev) => {
      if (o.json) out(JSON.stringify(r.rebuildEventJson(ev)));
      else if (ev.job !== undefined && (o.job === undefined || ev.job.id.startsWith(o.job))) out(r.renderRebuilds([ev.job]).split("\n")[1] ?? "");
      else if (ev.type === r.RebuildEvent_Type.DELETE) out(safeLine`${ev.jobId.slice(0, 12)}  pruned`);
    });
    r.follow(c, stream);
    return;
  }
  const { first, items } = await r.listAll(o, r.QueryService.method.listRebuilds, { job: o.job ?? "", image: o.image ?? "" }, (p) => p.jobs);
  if (o.job !== undefined) {
    const j = items[0];
    if (j === undefined) throw new r.ShadowError(r.Code.NotFound, `no rebuild job ${o.job}`);
    out(o.json ? JSON.stringify(r.rebuildJobJson(j), null, 2) : r.renderRebuildJob(j));
    return;
  }
  const whole = { ...first, jobs: items, nextPageToken: "" };
  out(o.json ? JSON.stringify(r.rebuildsJson(whole), null, 2) : r.renderRebuildsView(whole));
}

type Runtime = Awaited<ReturnType<typeof runtime>>;

/** One admin call (the flags of `rebuilds` count too); prints the job as the call left it. */
async function admin(cmd: Command, verb: string, call: (r: Runtime, o: JsonFlags) => Promise<import("../../proto/gen/shadowlayer/v1/rebuild_pb.js").RebuildJob>): Promise<void> {
  const o = cmd.optsWithGlobals<JsonFlags>();
  const r = await runtime();
  const j = await call(r, o);
  out(o.json ? JSON.stringify(r.rebuildJobJson(j), null, 2) : safeLine`job ${j.id} ${verb}: ${j.image} (${j.reasons.join(", ")}) is ${r.stateLabel(j.state)}`);
}
