/**
 * Every key the aggregator writes to level, in one place. Keys are UTF-8 strings; "!" separates
 * the kind from the id so a kind's keys form one contiguous range.
 */
export const keys = {
  /** LayerGraph (protobuf binary) by container id. */
  graph: (containerId: string) => `graph!${containerId}`,
  graphRange: { gt: "graph!", lt: "graph!\xff" },
  /** NodeRecord (JSON) by node name. */
  node: (node: string) => `node!${node}`,
  nodeRange: { gt: "node!", lt: "node!\xff" },
  /** Last telemetry seq stored per agent spool (decimal string), for exactly-once delivery. */
  spoolSeq: (spoolId: string) => `spool!${spoolId}`,
  /** StoredWindow (protobuf binary) by node, spool and seq: a node's windows in arrival order. */
  window: (node: string, spoolId: string, seq: bigint, index: number) =>
    `win!${node}!${spoolId}!${seq.toString(16).padStart(16, "0")}!${index.toString(16).padStart(4, "0")}`,
  windowRange: { gt: "win!", lt: "win!\xff" },
  /** Detection (protobuf binary), likewise. */
  detection: (node: string, spoolId: string, seq: bigint) => `det!${node}!${spoolId}!${seq.toString(16).padStart(16, "0")}`,
  detectionRange: { gt: "det!", lt: "det!\xff" },
  /** Store schema version, for future migrations. */
  schema: "meta!schema",
} as const;

export const SCHEMA_VERSION = "1";
