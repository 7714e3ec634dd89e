/** A level store in a fresh temp directory for the length of `use`, closed and removed after. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Level } from "level";

export async function withTempLevel(use: (db: Level<string, Uint8Array>) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "sl-level-"));
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" });
  await db.open();
  try {
    await use(db);
  } finally {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  }
}
