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
  /** Store schema version, for future migrations. */
  schema: "meta!schema",
} as const;

export const SCHEMA_VERSION = "1";
