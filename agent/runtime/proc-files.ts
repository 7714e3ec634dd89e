/**
 * Small synchronous readers for /proc files. /proc reads are served from kernel memory in a few
 * microseconds; going through the libuv thread pool would cost more than the read itself.
 */
import { closeSync, openSync, readlinkSync, readSync } from "node:fs";

let buf = Buffer.allocUnsafe(64 * 1024);

/**
 * Reads a /proc (or cgroupfs) file whole, or undefined if it vanished or is unreadable. The shared
 * buffer grows for large tables (a busy host's net/tcp or mountinfo passes 64 KiB) and is kept.
 * `latin1` decodes faster where only ASCII matters (numeric tables).
 */
export function readProcFile(path: string, encoding: "utf8" | "latin1" = "utf8"): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return undefined;
  }
  try {
    let len = 0;
    for (;;) {
      if (len === buf.length) {
        const next = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(next, 0, 0, len);
        buf = next;
      }
      const n = readSync(fd, buf, len, buf.length - len, null);
      if (n <= 0) break;
      len += n;
    }
    return buf.toString(encoding, 0, len);
  } catch {
    // ESRCH when the process exits between open and read.
    return undefined;
  } finally {
    closeSync(fd);
  }
}

export function readProcLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

export interface ProcStat {
  comm: string;
  ppid: number;
  /** Field 22: start time in clock ticks after boot. */
  startTime: bigint;
}

/** Parses /proc/<pid>/stat. comm may hold spaces and ')', so fields are counted from the last ')'. */
export function parseStat(text: string): ProcStat | undefined {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  const rest = text.slice(close + 2).split(" ");
  // rest[0] is field 3 (state); field N is rest[N - 3].
  const ppid = Number(rest[1]);
  const start = rest[19];
  if (start === undefined || !/^\d+$/.test(start) || !Number.isFinite(ppid)) return undefined;
  return { comm: text.slice(open + 1, close), ppid, startTime: BigInt(start) };
}
