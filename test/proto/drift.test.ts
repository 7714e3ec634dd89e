/**
 * Generated code must equal what `npm run gen` produces from proto/ now: regenerate into a temp
 * dir with the same buf template and compare file by file.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { PACKAGE_ROOT, PROTO_DIR } from "../../common/paths.js";

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)))
    .sort();
}

test("proto/gen has no drift from proto/*.proto", () => {
  const out = mkdtempSync(join(tmpdir(), "sl-gen-"));
  try {
    const bin = join(PACKAGE_ROOT, "node_modules", ".bin");
    execFileSync(join(bin, "buf"), ["generate", "-o", out], {
      cwd: PROTO_DIR,
      env: { ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}` },
      stdio: "pipe",
    });
    const committed = join(PROTO_DIR, "gen");
    const fresh = join(out, "gen");
    assert.deepEqual(files(fresh), files(committed), "same generated files");
    for (const f of files(fresh)) {
      assert.equal(readFileSync(join(committed, f), "utf8"), readFileSync(join(fresh, f), "utf8"), `${f} is stale: run \`npm run gen\``);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
