/**
 * The agent's switchover records as the link reads them: all it keeps (sent after each connect)
 * and each change (sent at once), so the aggregator's history survives a disconnect.
 */
import type { SwitchoverRecord } from "../../../proto/gen/shadowlayer/v1/switchover_pb.js";

export interface SwitchoverRecordSource {
  all(): SwitchoverRecord[];
  on(event: "record", fn: (r: SwitchoverRecord) => void): unknown;
  off(event: "record", fn: (r: SwitchoverRecord) => void): unknown;
}
