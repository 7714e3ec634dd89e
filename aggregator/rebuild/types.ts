/**
 * The shapes the rebuild stage's parts share: a builder of the pool, an image as saved from an
 * engine, a strategy and what it is given and returns. The scheduler (which job, when, where),
 * the strategies (how a shadow is made) and the pipeline (label, store, sign, re-scan, prepare)
 * meet only through these.
 */
import type Docker from "dockerode";

/** cgroup limits a builder's builds and helper containers run under (Engine build API names in comments). */
export interface BuildLimits {
  /** `cpusetcpus`: e.g. "1" (the last CPU on a 2-core host). */
  cpusetCpus?: string;
  /** `cpuperiod` / `cpuquota` in microseconds: quota/period = share of one CPU. */
  cpuPeriod?: number;
  cpuQuota?: number;
  /** `cpushares` (1024 = a normal container). */
  cpuShares?: number;
  /** `memory` in bytes. */
  memoryBytes?: number;
}

/** One builder engine as configured (`--builder`). */
export interface BuilderConfig {
  /** Defaults to "local" for the local engine, else the endpoint's host:port or socket path. */
  name: string;
  /** unix:///var/run/docker.sock or tcp://host:port */
  endpoint: string;
  /** Builds at once on this builder (default 1). */
  concurrency: number;
  limits: BuildLimits;
  /** For tcp:// endpoints: TLS client material (PEM), as `docker --tlsverify` uses. */
  tls?: { ca: string; cert: string; key: string };
}

/** A healthy builder handed to a strategy for one job. */
export interface Builder {
  readonly name: string;
  readonly docker: Docker;
  readonly limits: BuildLimits;
  /**
   * The engine's data root when it is this host's engine (a unix socket): a strategy may then
   * read layer directories and layerdb on disk (restore's verification). Undefined for tcp://.
   */
  readonly localRoot?: string;
}

/** One layer of a saved image: its uncompressed tar on disk. */
export interface SavedLayer {
  /** sha256:… of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffId: string;
  /** Path of the uncompressed layer tar. */
  path: string;
  size: number;
}

/** An image as `docker save` gives it, unpacked into a work directory. */
export interface SavedImage {
  /** The image config JSON, byte for byte, and its digest (the image id). */
  config: Buffer;
  configDigest: string;
  layers: SavedLayer[];
  repoTags: string[];
}

/** Facts about the source image a strategy is chosen from (image inspect, labels, OCI annotations). */
export interface ImageFacts {
  imageId: string;
  /** A name the image is known by (a repo tag), or the id. */
  name: string;
  labels: Record<string, string>;
  /** diffIDs, bottom first. */
  diffIds: string[];
  /** The engine's history entries (created_by), bottom first, empty layers included. */
  history: Array<{ createdBy: string; emptyLayer: boolean }>;
  repoDigests: string[];
  os: string;
  architecture: string;
}

/** A vulnerable package the job was planned for, with the version that fixes it. */
export interface VulnerablePackage {
  /** Binary package name (dpkg/apk), and the source package for Debian when it differs. */
  name: string;
  sourceName: string;
  installedVersion: string;
  fixedVersion: string;
  /** deb | apk | npm | pypi */
  type: string;
  layerId: string;
  advisory: string;
}

export type StrategyName = "rebase" | "recipe" | "restore" | "patch";

export interface StrategyContext {
  jobId: string;
  facts: ImageFacts;
  /** The job's reasons: advisory ids, "drift", "performance-anomaly". */
  reasons: string[];
  /** The riskiest layer that asked for the job (diffID). */
  sourceLayer: string;
  vulnerable: VulnerablePackage[];
  builder: Builder;
  /** Labels to put on the shadow image (the pipeline's metadata; a strategy adds, never drops). */
  labels: Record<string, string>;
  /** Policy mapping of bases: old base name (repo:tag or image id) to the newer one. */
  baseMap: Record<string, string>;
  /** The package mirror for `patch` (an http(s) URL of an apt/apk repository), if configured. */
  packageMirror?: string;
  /** A scratch directory of this job's own, removed after it. */
  workDir: string;
  /** One line of the build's log (kept as the job's log tail). */
  log: (line: string) => void;
  /** Times one named step (shown by `rebuilds`). */
  step: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  signal: AbortSignal;
}

/** What a strategy made: a new image in the builder's engine. */
export interface StrategyResult {
  /** The shadow's image id (config digest) in the builder's engine. */
  imageId: string;
  /** diffIDs of the shadow, bottom first. */
  layerIds: string[];
  /** How many of them are the source's own layers, byte for byte. */
  layersReused: number;
  /** One line for the job's steps (e.g. "base shadowlayer-demo/base:1 -> :2, 3 app layers kept"). */
  detail: string;
}

export interface Strategy {
  readonly name: StrategyName;
  /**
   * Whether this strategy can rebuild the image for these reasons; the reason it can (shown as
   * the job's strategy_reason), or undefined.
   */
  applies(facts: ImageFacts, reasons: readonly string[], ctx: { baseMap: Record<string, string>; packageMirror?: string }): string | undefined;
  /** Why it does not apply (said when no strategy can serve a job, or a forced one cannot), if it can tell. */
  refusal?(facts: ImageFacts, reasons: readonly string[], ctx: { baseMap: Record<string, string>; packageMirror?: string }): string | undefined;
  run(ctx: StrategyContext): Promise<StrategyResult>;
}

/** Labels every shadow carries (issue: seed spec 6). */
export const SHADOW_LABELS = {
  created: "org.opencontainers.image.created",
  rebuiltAt: "shadowlayer.rebuilt-at",
  reason: "shadowlayer.reason",
  sourceImage: "shadowlayer.source-image",
  sourceLayer: "shadowlayer.source-layer",
  strategy: "shadowlayer.strategy",
  risk: "shadowlayer.risk",
  job: "shadowlayer.job",
} as const;

/** Labels and annotations a strategy reads from the source image. */
export const SOURCE_LABELS = {
  /** OCI: the base image's name (repo:tag) and digest. */
  baseName: "org.opencontainers.image.base.name",
  baseDigest: "org.opencontainers.image.base.digest",
  /** The newer base an image (or its base) names for `rebase` when no --base-map entry does. */
  baseSuccessor: "shadowlayer.base.successor",
  /** A build context directory on the builder's host and the Dockerfile in it (recipe). */
  recipeContext: "shadowlayer.recipe.context",
  recipeDockerfile: "shadowlayer.recipe.dockerfile",
} as const;

/** A builder held for one job; `lost` aborts when the builder fails its health check mid-job. */
export interface BuilderLease {
  readonly builder: Builder;
  readonly lost: AbortSignal;
  /** Gives the slot back (idempotent). */
  release(): void;
}

/** The pool as the scheduler sees it (builder-pool.ts implements it). */
export interface BuilderPoolApi {
  /**
   * A slot on a healthy builder with free concurrency, waiting for one (in call order) until
   * `signal` aborts. `avoid`: builder names to skip when another is healthy (the one a job just failed on).
   */
  acquire(signal: AbortSignal, avoid?: readonly string[]): Promise<BuilderLease>;
  /** Each builder's health, concurrency and running count. */
  status(): import("../../proto/gen/shadowlayer/v1/rebuild_pb.js").BuilderStatus[];
  close(): Promise<void>;
}

/** Runs one job on a leased builder (pipeline.ts implements it): the scheduler's only way to build. */
export interface JobRunner {
  run(
    job: import("../../proto/gen/shadowlayer/v1/rebuild_pb.js").RebuildJob,
    lease: BuilderLease,
    io: {
      signal: AbortSignal;
      /** A step started or ended, the progress moved: the scheduler stores and announces the job. */
      update: (patch: { steps?: import("../../proto/gen/shadowlayer/v1/rebuild_pb.js").RebuildStep[]; progress?: number; strategy?: string; strategyReason?: string }) => void;
      log: (line: string) => void;
    },
  ): Promise<import("../../proto/gen/shadowlayer/v1/rebuild_pb.js").Shadow>;
}
