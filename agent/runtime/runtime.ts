/**
 * The container runtime the agent reads: a Docker engine (`docker-runtime.ts`) or containerd with
 * its CRI plugin (`containerd/`). Everything above this interface (graphs, inventory, telemetry,
 * exec events, drift) is the same on both; the sensing half needs only what is listed here.
 *
 * Design:
 * - A runtime lists the *workload* containers (a pod's sandbox, the "pause" container, is never
 *   listed: it runs no code of the user's and is not scored) and answers one container's facts,
 *   `undefined` when it vanished between list and read (the caller counts it and goes on).
 * - Layers are always the image config's `rootfs.diff_ids`, bottom first; their directories come
 *   from the storage the runtime uses (overlay2's layerdb; the overlayfs snapshotter's chain),
 *   and `layout` tells the graph builder how to name a directory, so the mount check compares
 *   the runtime's chain against `/proc/<pid>/mountinfo` the same way on both.
 * - Events say only "this container changed" or "is gone"; the collector re-reads it. A lost
 *   event stream is reported once; the watcher resubscribes with backoff and resyncs in full.
 */
import type { ContainerFacts } from "./engine-facts.js";
import type { ResolvedImage } from "../layers/image-layers.js";

export type RuntimeKind = "docker" | "containerd";

/** `--runtime`: one of the kinds, or whichever socket answers (Docker first when both do). */
export type RuntimeChoice = RuntimeKind | "auto";

export const RUNTIME_CHOICES = ["auto", "docker", "containerd"] as const satisfies readonly RuntimeChoice[];

export interface RuntimeInfo {
  kind: RuntimeKind;
  /** Engine or containerd version. */
  version: string;
  /** overlay2 (Docker's storage driver) or overlayfs (containerd's snapshotter). */
  driver: string;
  /** Docker's data root; containerd's root (`/var/lib/containerd`), as the runtime reports it. */
  rootDir: string;
  /** "1" or "2" when known, else "". */
  cgroupVersion: string;
  /** The socket dialled. */
  socket: string;
}

/** How one runtime names its layer directories (for the mount check). */
export interface StorageLayout {
  /** The storage directory id of a layer directory as the runtime lists it (overlay2 cache id, snapshot id). */
  dirKey(dir: string): string;
  /** The same for a lowerdir as the kernel shows it in mountinfo (Docker's `l/<short>` links resolved). */
  mountDirKey(dir: string): string;
  /** False for chain entries that are not image layers (Docker's `<id>-init`). */
  isImageEntry(key: string): boolean;
}

/** A change the runtime reported: the collector re-reads the container, or drops it. */
export interface RuntimeEvent {
  id: string;
  /**
   * "changed": created, started, stopped, paused, updated; "removed": deleted; "ignored": counted
   * only (exec events); "unparsable": an event that did not decode (counted as an error).
   */
  change: "changed" | "removed" | "ignored" | "unparsable";
  /** The runtime's own action name, for the events metric ("start", "/tasks/exit", …). */
  action: string;
}

export interface RuntimeEventHandlers {
  event(e: RuntimeEvent): void;
  /** The stream ended or failed (the runtime restarted): called once per subscription. */
  lost(why: string): void;
}

export interface RuntimeSubscription {
  close(): void;
}

export interface ContainerRuntime {
  readonly info: RuntimeInfo;
  readonly layout: StorageLayout;
  /** Ids of the workload containers (all states); pod sandboxes are left out. */
  listContainers(): Promise<string[]>;
  /**
   * One container's facts; undefined when it is gone (or is a pod sandbox, which is never scored).
   * `listed`: the id comes from the `listContainers()` just made, so what that pass read (tasks,
   * pods) may be used instead of asking again; after an event the facts are read afresh.
   */
  inspect(id: string, opts?: { listed?: boolean }): Promise<ContainerFacts | undefined>;
  /** The container's image, layers bottom first; undefined when the image is gone. Cached by image id. */
  resolveImage(c: ContainerFacts): Promise<ResolvedImage | undefined>;
  /** Follows container changes; resolves once the stream is open, rejects when it cannot be. */
  subscribe(h: RuntimeEventHandlers): Promise<RuntimeSubscription>;
  /** Forgets cached images and pod data (after the runtime restarted). */
  clearCaches(): void;
  close(): void;
}
