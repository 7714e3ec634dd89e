/**
 * A table for people: every cell made terminal-safe, then columns padded by how many terminal
 * cells each one takes (a CJK character or an emoji takes two, a combining mark none), so rows stay
 * aligned whatever a container named its files.
 */
import { terminalSafe } from "./terminal-safe.js";

/** Combining marks and format characters (ZWJ, ZWSP, variation selectors' kin) take no cell. */
const ZERO = /[\p{Mn}\p{Me}\p{Cf}]/u;
const EMOJI = /\p{Emoji_Presentation}/u;

/** East Asian Wide and Fullwidth ranges (as wcwidth has them). */
function wide(cp: number): boolean {
  return (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0x303e) ||
    (cp >= 0x3041 && cp <= 0x33ff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  );
}

/** How many terminal cells `s` takes (for text already made terminal-safe). */
export function cellWidth(s: string): number {
  let n = 0;
  for (const c of s) {
    const cp = c.codePointAt(0) ?? 0;
    if (ZERO.test(c)) continue;
    n += wide(cp) || EMOJI.test(c) ? 2 : 1;
  }
  return n;
}

/** `s` (terminal-safe) followed by spaces up to `width` cells. */
export function padCells(s: string, width: number): string {
  const w = cellWidth(s);
  return w >= width ? s : s + " ".repeat(width - w);
}

/** Columns two spaces apart, each as wide as its widest escaped cell; trailing spaces trimmed. */
export function renderTable(head: readonly string[], body: readonly (readonly string[])[]): string {
  const rows = [head, ...body].map((r) => head.map((_, i) => terminalSafe(r[i] ?? "")));
  const widths = head.map((_, i) => Math.max(...rows.map((r) => cellWidth(r[i] ?? ""))));
  return rows.map((r) => r.map((c, i) => padCells(c, widths[i] ?? 0)).join("  ").trimEnd()).join("\n");
}
