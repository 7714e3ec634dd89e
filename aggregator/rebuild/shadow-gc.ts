/**
 * Keeps the newest N shadows of each source image and deletes the rest: through the registry API
 * (the manifest and its signature tag) or, for shadows kept in a builder's engine, by removing the
 * image there. A shadow still used by a container (a prepared shadow on this host) is left for
 * the next round. Runs after each ready job and on a slow timer.
 */
import type Docker from "dockerode";
import { RebuildState, type RebuildJob } from "../../proto/gen/shadowlayer/v1/rebuild_pb.js";
import type { Logger } from "../../common/log.js";
import type { ShadowRegistry } from "./pipeline.js";
import { deleteShadow } from "./registry-gc.js";

export const DEFAULT_SHADOWS_KEPT = 3;

export interface GcJobs {
  all(): RebuildJob[];
  /** Marks a job's shadow as deleted (its reference cleared, a note in its log). */
  noteCollected(jobId: string, note: string): Promise<void>;
}

/** The jobs whose shadows go: per image, all but the newest `keep` that still hold a shadow. */
export function shadowsToCollect(jobs: readonly RebuildJob[], keep: number): RebuildJob[] {
  const byImage = new Map<string, RebuildJob[]>();
  for (const j of jobs) {
    if (j.shadow === undefined || j.shadow.reference === "") continue;
    if (j.state !== RebuildState.READY && j.state !== RebuildState.SUPERSEDED && j.state !== RebuildState.FAILED) continue;
    let l = byImage.get(j.imageId);
    if (l === undefined) byImage.set(j.imageId, (l = []));
    l.push(j);
  }
  const out: RebuildJob[] = [];
  for (const l of byImage.values()) {
    // A failed job's image (re-scan not improved) is never used: collected at once. Ready ones
    // count towards the kept N, newest first.
    out.push(...l.filter((j) => j.state === RebuildState.FAILED));
    const usable = l.filter((j) => j.state !== RebuildState.FAILED).sort((a, b) => Number((b.shadow?.builtAt?.seconds ?? 0n) - (a.shadow?.builtAt?.seconds ?? 0n)));
    out.push(...usable.slice(Math.max(1, keep)));
  }
  return out;
}

export class ShadowGc {
  private running: Promise<void> | undefined;

  constructor(
    private readonly jobs: GcJobs,
    private readonly o: { keep: number; registry?: ShadowRegistry; engines: (builder: string) => Docker | undefined; log: Logger },
  ) {}

  /** One round (concurrent calls share it). */
  collect(): Promise<void> {
    this.running ??= this.round().finally(() => (this.running = undefined));
    return this.running;
  }

  private async round(): Promise<void> {
    for (const j of shadowsToCollect(this.jobs.all(), this.o.keep)) {
      const s = j.shadow;
      if (s === undefined) continue;
      const log = this.o.log.child({ job: j.id.slice(0, 12), image: j.image });
      try {
        if (!s.localOnly && this.o.registry !== undefined && s.manifestDigest !== "") {
          await deleteShadow(this.o.registry.client, this.o.registry.repository, s.manifestDigest);
          await this.jobs.noteCollected(j.id, `deleted ${s.reference} and its signature from the registry`);
        } else if (s.localOnly) {
          const docker = this.o.engines(j.builder);
          if (docker === undefined) continue;
          await docker
            .getImage(s.imageId)
            .remove({ force: false })
            .catch((err: unknown) => {
              // 404: already gone, which is what we wanted.
              if ((err as { statusCode?: number }).statusCode !== 404) throw err;
            });
          await this.jobs.noteCollected(j.id, `removed ${s.imageId.slice(0, 19)} from ${j.builder}'s engine`);
        }
        log.info({ shadow: s.reference }, "old shadow deleted");
      } catch (err) {
        // 409: a container still uses it (a prepared shadow); next round.
        log.debug({ err: String(err) }, "old shadow not deleted yet");
      }
    }
  }
}
