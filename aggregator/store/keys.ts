/**
 * Every key the aggregator writes to level, in one place. Keys are UTF-8 strings; "!" separates
 * the kind from the id so a kind's keys form one contiguous range. The bytes of each key are part
 * of the on-disk format: an existing data directory must read the same after any change here.
 */

/** The range of keys that start with `prefix` ("\xff" sorts after every character used in ids). */
const under = (prefix: string) => ({ gt: prefix, lt: `${prefix}\xff` });
const hex = (n: number | bigint, width: number) => n.toString(16).padStart(width, "0");

const SPOOL = "spool!";
/** The prefix of one feed generation's chunk keys. */
const feedGen = (feed: string, gen: number) => `feed!${feed}!g${hex(gen, 8)}!`;
const NODE_SPOOL = "nspool!";
/** The largest window end the time index holds (12 hex digits of milliseconds: year 10889). */
const MAX_END_MS = 0xffffffffffff;

export const keys = {
  /** LayerGraph (protobuf binary) by container id. */
  graph: (containerId: string) => `graph!${containerId}`,
  graphRange: under("graph!"),
  /** NodeRecord (JSON) by node name. */
  node: (node: string) => `node!${node}`,
  nodeRange: under("node!"),
  /**
   * Before spools were per node: last seq per spool id alone, so one node could end another's
   * sequence. Only read, once, to move to `nodeSpoolSeq` (store/spool-seq-migration.ts).
   */
  spoolSeq: (spoolId: string) => `${SPOOL}${spoolId}`,
  spoolSeqRange: under(SPOOL),
  /** The spool id in a `spoolSeq` key. */
  spoolIdOf: (key: string) => key.slice(SPOOL.length),
  /**
   * Last telemetry seq stored per (node, agent spool) (decimal string), for exactly-once delivery.
   * Node names hold no "!" (hello checks them), so one node's keys never reach into another's.
   */
  nodeSpoolSeq: (node: string, spoolId: string) => `${NODE_SPOOL}${node}!${spoolId}`,
  nodeSpoolSeqRange: under(NODE_SPOOL),
  /** The node, spool and seq a `window` or `detection` key was stored under. */
  originOfTelemetry: (key: string): { node: string; spoolId: string; seq: bigint } => {
    const parts = key.split("!");
    const tail = parts[0] === "win" ? 2 : 1;
    return { node: parts[1] ?? "", spoolId: parts.slice(2, parts.length - tail).join("!"), seq: BigInt(`0x${parts[parts.length - tail] ?? "0"}`) };
  },
  /** StoredWindow (protobuf binary) by node, spool and seq: a node's windows in arrival order. */
  window: (node: string, spoolId: string, seq: bigint, index: number) => `win!${node}!${spoolId}!${hex(seq, 16)}!${hex(index, 4)}`,
  windowRange: under("win!"),
  windowsOfNode: (node: string) => under(`win!${node}!`),
  /**
   * The time index of windows: empty values, keyed by the window's end (milliseconds since the
   * epoch, 12 hex digits) and then its `window` key, so a time range is one contiguous read.
   */
  windowEnd: (endMs: number, windowKey: string) => `wend!${hex(Math.max(0, Math.min(MAX_END_MS, Math.floor(endMs))), 12)}!${windowKey}`,
  windowEndRange: under("wend!"),
  /** The index keys of windows that ended in [sinceMs, untilMs). */
  windowsEndedIn: (sinceMs: number, untilMs: number) => ({
    gte: `wend!${hex(Math.max(0, Math.min(MAX_END_MS, Math.ceil(sinceMs))), 12)}!`,
    lt: `wend!${hex(Math.max(0, Math.min(MAX_END_MS, Math.ceil(untilMs))), 12)}!`,
  }),
  /** The `window` key an index key points at. */
  windowOfEnd: (endKey: string) => endKey.slice("wend!".length + 13),
  /** Set once every stored window is in the time index (stores from before it are indexed on open). */
  windowEndIndexed: "meta!wend-index",
  /** Detection (protobuf binary), likewise. */
  detection: (node: string, spoolId: string, seq: bigint) => `det!${node}!${spoolId}!${hex(seq, 16)}`,
  detectionRange: under("det!"),
  detectionsOfNode: (node: string) => under(`det!${node}!`),
  /** The node in a `window` or `detection` key. */
  nodeOfTelemetry: (key: string) => {
    const a = key.indexOf("!");
    return key.slice(a + 1, key.indexOf("!", a + 1));
  },
  /** ImageInventory (protobuf binary) by image id, before inventories were per node; moved on open (store/inventory-store.ts). */
  inventory: (imageId: string) => `inv!${imageId}`,
  inventoryRange: under("inv!"),
  /** ImageInventory (protobuf binary) by image id and reporting node ("" for one from an older store). */
  nodeInventory: (imageId: string, node: string) => `ninv!${imageId}!${node}`,
  nodeInventoryRange: under("ninv!"),
  /** The node in a `nodeInventory` key (image ids and node names hold no "!"). */
  nodeOfInventory: (key: string) => key.slice(key.lastIndexOf("!") + 1),
  /** Policy (protobuf binary) by name. */
  policy: (name: string) => `policy!${name}`,
  policyRange: under("policy!"),
  /** A feed's status and current generation (JSON). */
  feedMeta: (feed: string) => `feed!${feed}!meta`,
  /** A feed added at run time (AdminService.AddFeed), kept so a restart reads it again (JSON; feeds/added-feeds.ts). */
  feedConfig: (feed: string) => `feedcfg!${feed}`,
  feedConfigRange: under("feedcfg!"),
  /** One chunk of a feed generation's records (its value's format: feeds/chunk-store.ts). */
  feedChunk: (feed: string, gen: number, chunk: number) => `${feedGen(feed, gen)}${hex(chunk, 8)}`,
  /** All chunks of one generation of a feed. */
  feedGeneration: (feed: string, gen: number) => under(feedGen(feed, gen)),
  /**
   * The chunks of every generation of a feed but `current` (0: none is current): what an ingest
   * cut short by a crash, or a replaced generation not yet cleared, left behind.
   */
  feedOrphans: (feed: string, current: number) => {
    const all = under(`feed!${feed}!g`);
    if (current === 0) return [all];
    const cur = under(feedGen(feed, current));
    return [
      { gt: all.gt, lt: cur.gt },
      { gt: cur.lt, lt: all.lt },
    ];
  },
  /** RebuildJob (protobuf binary) by job id (rebuild/job-key.ts: hex, no "!"). */
  rebuild: (jobId: string) => `rebuild!${jobId}`,
  rebuildRange: under("rebuild!"),
  /**
   * SwitchoverRecord (protobuf binary) by record id (the command id the aggregator made, or the
   * agent's for one it started itself; ids hold no "!"): every switchover and rollback, newest
   * ~10,000 kept (store/switchover-store.ts).
   */
  switchover: (id: string) => `swo!${id}`,
  switchoverRange: under("swo!"),
  /** Store schema version, for future migrations. */
  schema: "meta!schema",
} as const;

export const SCHEMA_VERSION = "1";
