/**
 * The image's os-release, read from the layer that provides it at the top, following symlinks
 * (usually etc/os-release -> ../usr/lib/os-release) inside the image only.
 */
import { readlinkSync } from "node:fs";
import { resolveLinkInImage } from "../overlay/image-path.js";
import type { OverlayStack } from "../overlay/overlay-stack.js";
import { readCapped } from "./capped-read.js";
import { parseOsRelease, type OsRelease } from "./os-release.js";

/** Where os-release is looked for, in order. */
export const OS_RELEASE_PATHS = ["etc/os-release", "usr/lib/os-release"];

/** `note` is told about a file that is there but cannot be used. */
export async function imageOsRelease(stack: OverlayStack, note: (layer: number, rel: string, reason: string) => void): Promise<OsRelease | undefined> {
  for (const start of OS_RELEASE_PATHS) {
    let rel: string | undefined = start;
    for (let hop = 0; hop < 8 && rel !== undefined; hop++) {
      const p = stack.provider(rel);
      if (p === null || (p.kind !== "file" && p.kind !== "symlink")) break;
      const abs = stack.layers[p.layer]?.abs(rel) ?? "";
      if (p.kind === "symlink") {
        let target: string;
        try {
          target = readlinkSync(abs);
        } catch {
          break;
        }
        rel = resolveLinkInImage(rel, target);
        continue;
      }
      const raw = await readCapped(abs, 64 * 1024, true);
      if (typeof raw === "string") {
        note(p.layer, rel, raw);
        break;
      }
      const os = parseOsRelease(raw.toString("utf8"));
      if (os !== undefined) return os;
      note(p.layer, rel, "os-release without ID");
      break;
    }
  }
  return undefined;
}
