/**
 * What one image's inventory may cost. A directory of 200,000 entries is walked as a stream: the
 * search stops at its cap, says so, and the agent's memory does not grow with the directory (it
 * did: the whole listing was read and sorted before the cap applied). Past the per-image budget
 * (entries, bytes, time) the inventory is partial with the reason, and the scanner reads images
 * one at a time.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { inventoryOf, type InventoryLayer } from "../../agent/inventory/layer-inventory.js";
import { InventoryScanner } from "../../agent/inventory/scanner.js";
import type { ResolvedImage } from "../../agent/layers/image-layers.js";
import { silentLogger } from "../../common/log.js";
import type { ImageInventory } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { tempDir } from "../harness/temp-dir.js";

const run = promisify(execFile);
const LAYER_INVENTORY = fileURLToPath(new URL("../../agent/inventory/layer-inventory.js", import.meta.url));

/** A layer directory holding `files` (path → content); a name ending in "/" is an empty directory. */
function layer(root: string, name: string, files: Record<string, string>): InventoryLayer {
  const dir = path.join(root, name);
  for (const [rel, data] of Object.entries(files)) {
    const abs = path.join(dir, rel);
    if (rel.endsWith("/")) mkdirSync(abs, { recursive: true });
    else {
      mkdirSync(path.dirname(abs), { recursive: true });
      writeFileSync(abs, data);
    }
  }
  mkdirSync(dir, { recursive: true });
  return { diffId: `sha256:${name.padEnd(64, "0")}`, dir };
}

const manifest = (name: string) => JSON.stringify({ name, version: "1.0.0" });
const npmPackages = (n: number, prefix = "p") =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`usr/lib/node_modules/${prefix}${i}/package.json`, manifest(`${prefix}${i}`)]));
const dpkgStatus = (n: number) =>
  Array.from({ length: n }, (_, i) => `Package: pkg${i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-${i}\n`).join("\n");

/**
 * Reads the inventory of `dir` (one layer) in a fresh node process with these caps and reports
 * how much its peak RSS grew during the read: the process's own baseline does not depend on us.
 */
async function inventoryInChild(dir: string, caps: Record<string, number>): Promise<{ growthMb: number; partial: Array<{ path: string; reason: string }> }> {
  const script = `
    const { inventoryOf } = await import(${JSON.stringify(LAYER_INVENTORY)});
    const before = process.resourceUsage().maxRSS;
    const inv = await inventoryOf([{ diffId: "sha256:big", dir: ${JSON.stringify(dir)} }], { caps: ${JSON.stringify(caps)} });
    const growthMb = (process.resourceUsage().maxRSS - before) / 1024;
    process.stdout.write(JSON.stringify({ growthMb, partial: inv.partial }));`;
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as { growthMb: number; partial: Array<{ path: string; reason: string }> };
}

describe("directory walks stop at their caps while walking", () => {
  // A tmpfs when there is one: 200,000 directories are made and removed in seconds there.
  const big = mkdtempSync(path.join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "sl-inv-bounds-"));
  after(() => rmSync(big, { recursive: true, force: true }));

  it("walks a 200,000-entry node_modules as a stream: stops at the cap, says partial, memory does not follow the directory", async (t) => {
    const dir = path.join(big, "layer");
    const nm = path.join(dir, "usr/lib/node_modules");
    mkdirSync(nm, { recursive: true });
    for (let i = 0; i < 200_000; i++) mkdirSync(path.join(nm, `package-number-${i}`));

    const capped = await inventoryInChild(dir, { maxEntriesPerLayer: 1000 });
    t.diagnostic(`peak RSS growth, cap 1000: ${capped.growthMb.toFixed(1)} MB`);
    assert.equal(capped.partial.length, 1);
    assert.match(capped.partial[0]?.reason ?? "", /search stopped after 1000 directory entries \(cap\)/);
    assert.match(capped.partial[0]?.path ?? "", /^\/usr\/lib\/node_modules/);
    // Reading the whole listing (200,000 names, then sorted) grew the process by about 60 MB.
    assert.ok(capped.growthMb < 16, `peak RSS grew ${capped.growthMb.toFixed(1)} MB while reading at most 1000 entries`);

    // At the default cap (200,000 entries and checks), each package dir costs an entry and two
    // checks: what is held must still not grow with what was walked.
    const byDefault = await inventoryInChild(dir, {});
    t.diagnostic(`peak RSS growth, default cap: ${byDefault.growthMb.toFixed(1)} MB`);
    assert.match(byDefault.partial[0]?.reason ?? "", /search stopped after 200000 directory entries \(cap\)/);
    assert.ok(byDefault.growthMb < 24, `peak RSS grew ${byDefault.growthMb.toFixed(1)} MB walking to the default cap`);
  });
});

describe("per-image inventory budget", () => {
  const tmp = tempDir("sl-inv-budget-");

  it("past its entry budget, stops the search, names the layers not searched, and says why", async () => {
    const root = path.join(tmp.path, "entries");
    const layers = [layer(root, "a", npmPackages(30)), layer(root, "b", npmPackages(5, "q"))];
    const inv = await inventoryOf(layers, { budget: { maxEntries: 40 } });
    assert.equal(inv.overBudget, "per-image budget of 40 directory entries spent");
    assert.ok(inv.packages.length > 0 && inv.packages.length < 30, `${inv.packages.length} packages before the budget`);
    assert.deepEqual(
      inv.partial.map((p) => [p.layerId, p.reason.replace(/^(search stopped|layer not searched).*/, "$1")]),
      [
        [layers[0]?.diffId, "search stopped"],
        [layers[1]?.diffId, "layer not searched"],
      ],
    );
    assert.match(inv.partial[1]?.reason ?? "", /layer not searched: per-image budget of 40 directory entries spent/);
    const full = await inventoryOf(layers);
    assert.equal(full.packages.length, 35);
    assert.equal(full.overBudget, undefined);
    assert.deepEqual(full.partial, []);
  });

  it("past its byte budget, reads no further database and counts those not read", async () => {
    const root = path.join(tmp.path, "bytes");
    const status = dpkgStatus(200);
    const layers = [layer(root, "a", { "var/lib/dpkg/status": status, ...npmPackages(10) })];
    const inv = await inventoryOf(layers, { budget: { maxBytes: 1000 } });
    assert.equal(inv.overBudget, "per-image budget of 1000 database bytes spent");
    assert.equal(inv.packages.filter((p) => p.type === "deb").length, 200, "the read that crossed the budget completes");
    assert.equal(inv.packages.filter((p) => p.type === "npm").length, 0);
    assert.deepEqual(inv.partial, [{ layerId: layers[0]?.diffId, path: "/", reason: "10 of 11 database files not read: per-image budget of 1000 database bytes spent" }]);
  });

  it("past its time budget, is partial with the reason", async () => {
    const root = path.join(tmp.path, "time");
    const layers = [layer(root, "a", npmPackages(3))];
    const inv = await inventoryOf(layers, { budget: { maxMs: 0 } });
    assert.equal(inv.overBudget, "per-image budget of 0 ms spent");
    assert.deepEqual(inv.packages, []);
    assert.deepEqual(inv.partial.map((p) => p.reason), ["layer not searched: per-image budget of 0 ms spent"]);
  });
});

describe("inventory scanner", () => {
  const tmp = tempDir("sl-inv-scanner-");
  const image = (id: string, layers: InventoryLayer[]): ResolvedImage => ({
    id: `sha256:${id.padEnd(64, "0")}`,
    tags: [],
    driver: "overlay2",
    layers: layers.map((l) => ({ diffId: l.diffId, dir: l.dir, chainId: l.diffId, cacheId: "", sizeBytes: 0n, createdBy: "", created: "", comment: "" })),
    historySource: "none",
  });

  it("reads images one at a time, and sends one past its budget partial with the reason", async () => {
    let active = 0;
    let most = 0;
    const scanner = new InventoryScanner(undefined, silentLogger(), {
      budget: { maxEntries: 60 },
      read: async (layers, options) => {
        most = Math.max(most, ++active);
        try {
          return await inventoryOf(layers, options);
        } finally {
          active--;
        }
      },
    });
    const sent: ImageInventory[] = [];
    scanner.on("inventory", (inv) => sent.push(inv));
    const small = image("1", [layer(path.join(tmp.path, "small"), "s", npmPackages(2))]);
    const big = image("2", [layer(path.join(tmp.path, "big"), "b", npmPackages(50))]);
    const third = image("3", [layer(path.join(tmp.path, "third"), "t", npmPackages(3))]);
    scanner.want(big);
    scanner.want(small);
    scanner.want(third);
    await scanner.idle();
    assert.equal(most, 1, "never two images at once");
    assert.deepEqual(sent.map((i) => i.imageId), [big.id, small.id, third.id], "in the order asked for");
    const [b, s] = sent;
    assert.match(b?.partial[0]?.reason ?? "", /search stopped: per-image budget of 60 directory entries spent/);
    assert.deepEqual(s?.partial, []);
    assert.equal(s?.packages.length, 2);
    assert.deepEqual(scanner.stats, { scanned: 3, cached: 0, failed: 0, overBudget: 1 });
  });

  it("stops on close: what is queued is not read, what is being read is neither kept nor sent", async () => {
    let started!: () => void;
    const reading = new Promise<void>((r) => (started = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const results: Awaited<ReturnType<typeof inventoryOf>>[] = [];
    const scanner = new InventoryScanner(undefined, silentLogger(), {
      read: async (layers, options) => {
        started();
        await gate;
        const r = await inventoryOf(layers, options);
        results.push(r);
        return r;
      },
    });
    const sent: ImageInventory[] = [];
    scanner.on("inventory", (inv) => sent.push(inv));
    scanner.want(image("4", [layer(path.join(tmp.path, "first"), "f", npmPackages(2))]));
    scanner.want(image("5", [layer(path.join(tmp.path, "second"), "g", npmPackages(2))]));
    await reading;
    const closed = scanner.close();
    release();
    await closed;
    assert.equal(results.length, 1, "the queued image was not read");
    assert.equal(results[0]?.overBudget, "stopped: the agent is stopping");
    assert.deepEqual(sent, []);
    assert.deepEqual(scanner.all(), []);
    assert.equal(scanner.stats.scanned, 0);
  });
});
