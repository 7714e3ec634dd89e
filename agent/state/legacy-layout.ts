/**
 * Earlier agents kept two databases in their directory: `spool` (telemetry) and `inventory` (a
 * cache). On upgrade the undelivered telemetry is carried, in order, into the state database's
 * spool and the old directory removed; the inventory cache is dropped (it is read again).
 *
 * The old spool may hold 100,000 items, so it is carried in chunks; each chunk's batch also
 * records how far the carrying got, so a crash mid-way neither repeats nor skips an item.
 */
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Level } from "level";
import { TelemetryItemSchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { Code, ShadowError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { spoolKeys } from "../link/spool.js";
import type { StateSublevel } from "./state-sublevel.js";

/** Items per batch while carrying (bounds memory: a batch of windows is at most a few MB). */
const CHUNK = 1000;

type Op = { type: "put"; key: string; value: Uint8Array };

export async function upgradeLegacyLayout(agentDir: string, spool: StateSublevel<Uint8Array>, log: Logger): Promise<void> {
  const inventory = join(agentDir, "inventory");
  if (await exists(inventory)) {
    await rm(inventory, { recursive: true, force: true });
    log.info({ dir: inventory }, "earlier inventory cache dropped (inventories are read again)");
  }
  const oldSpool = join(agentDir, "spool");
  if (!(await exists(oldSpool))) return;
  const carried = await carrySpool(oldSpool, spool);
  await rm(oldSpool, { recursive: true, force: true });
  await spool.del(spoolKeys.carried);
  log.info({ dir: oldSpool, items: carried }, "undelivered telemetry carried over from the earlier spool");
}

/**
 * Copies the old spool's items after what `to` holds. A fresh `to` takes the old spool's id and
 * numbering as they are, so the aggregator still recognises items it stored before the upgrade;
 * a `to` with an id of its own (an agent downgraded and upgraded again) gets them renumbered.
 */
async function carrySpool(dir: string, to: StateSublevel<Uint8Array>): Promise<number> {
  const old = new Level<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view", createIfMissing: false });
  try {
    await old.open();
  } catch (err) {
    throw new ShadowError(Code.FailedPrecondition, `cannot open the earlier telemetry spool in ${dir} (is another agent using it?)`, { cause: err });
  }
  try {
    const oldId = await text(old, spoolKeys.id);
    // The old spool wrote its id before any item: without one it never held anything.
    if (oldId === undefined) return 0;
    const ownId = await text(to, spoolKeys.id);
    const mark = parseMark(await text(to, spoolKeys.carried));
    let through: bigint;
    if (mark?.from === oldId) through = mark.through;
    else if (ownId === oldId) return 0; // carried in full before; only the removal was left
    else {
      const dropped = Number((await text(old, spoolKeys.dropped)) ?? 0) + Number((await text(to, spoolKeys.dropped)) ?? 0);
      through = 0n;
      await to.batch([...(ownId === undefined ? [put(spoolKeys.id, oldId)] : []), put(spoolKeys.dropped, String(dropped)), markOp(oldId, through)]);
    }
    const renumberAs = ownId === undefined || ownId === oldId ? undefined : ownId;
    let next = 1n;
    for await (const k of to.keys({ ...spoolKeys.items, reverse: true, limit: 1 })) next = spoolKeys.seqOf(k) + 1n;
    let count = 0;
    for (;;) {
      const ops: Op[] = [];
      for await (const [key, value] of old.iterator({ gt: spoolKeys.item(through), lt: spoolKeys.items.lt, limit: CHUNK })) {
        through = spoolKeys.seqOf(key);
        if (renumberAs === undefined) ops.push({ type: "put", key, value });
        else {
          const item = fromBinary(TelemetryItemSchema, value);
          item.spoolId = renumberAs;
          item.spoolSeq = next;
          ops.push({ type: "put", key: spoolKeys.item(next), value: toBinary(TelemetryItemSchema, item) });
          next++;
        }
      }
      if (ops.length === 0) return count;
      await to.batch([...ops, markOp(oldId, through)]);
      count += ops.length;
    }
  } finally {
    await old.close();
  }
}

const put = (key: string, value: string): Op => ({ type: "put", key, value: new TextEncoder().encode(value) });
const markOp = (from: string, through: bigint): Op => put(spoolKeys.carried, JSON.stringify({ from, through: through.toString() }));

function parseMark(raw: string | undefined): { from: string; through: bigint } | undefined {
  if (raw === undefined) return undefined;
  const v: unknown = JSON.parse(raw);
  if (typeof v !== "object" || v === null || !("from" in v) || !("through" in v) || typeof v.from !== "string" || typeof v.through !== "string") {
    throw new ShadowError(Code.Internal, `unreadable spool carry-over mark: ${raw}`);
  }
  return { from: v.from, through: BigInt(v.through) };
}

async function text(db: StateSublevel<Uint8Array>, key: string): Promise<string | undefined> {
  const v = await db.get(key);
  return v === undefined ? undefined : new TextDecoder().decode(v);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
