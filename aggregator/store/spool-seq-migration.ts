/**
 * Moves a store written before spool sequences were per node. The old record (last seq per spool
 * id alone) cannot say which node it belongs to and may have been pushed to 2^64-1 by another node,
 * so it is not trusted: each (node, spool)'s last seq is read back from the windows and detections
 * that node actually stored under that spool, and the old records are dropped, all in one batch.
 * A store without old records is left as it is, so this runs once.
 */
import type { Level } from "level";
import { keys } from "./keys.js";

const enc = new TextEncoder();

/** Number of old records replaced (0 when the store was already per node). */
export async function migrateSpoolSeqs(db: Level<string, Uint8Array>): Promise<number> {
  const legacy = await db.keys(keys.spoolSeqRange).all();
  if (legacy.length === 0) return 0;
  const last = new Map<string, bigint>();
  for (const range of [keys.windowRange, keys.detectionRange]) {
    for await (const k of db.keys(range)) {
      const o = keys.originOfTelemetry(k);
      const key = keys.nodeSpoolSeq(o.node, o.spoolId);
      if (o.seq > (last.get(key) ?? 0n)) last.set(key, o.seq);
    }
  }
  await db.batch([
    ...[...last].map(([key, seq]) => ({ type: "put" as const, key, value: enc.encode(seq.toString()) })),
    ...legacy.map((key) => ({ type: "del" as const, key })),
  ]);
  return legacy.length;
}
