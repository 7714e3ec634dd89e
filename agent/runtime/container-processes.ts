/**
 * One pass over /proc that finds the processes of each container through /proc/<pid>/cgroup.
 * Shared by every container's graph in a refresh, so the scan is paid once per pass.
 */
import { readdirSync } from "node:fs";
import { parseStat, readProcFile, readProcLink } from "./proc-files.js";

export interface ProcInfo {
  pid: number;
  comm: string;
  ppid: number;
  startTime: bigint;
  /** Executable path inside the process's root, "" when unreadable (kernel thread, zombie). */
  exe: string;
  /** True when the kernel marks the executable as deleted. */
  exeDeleted: boolean;
  argv: string[];
}

export interface ProcScanStats {
  pids: number;
  /** Processes that vanished between listing and reading. */
  vanished: number;
}

const HEX64 = /[0-9a-f]{64}/g;

/**
 * Picks the container id out of a /proc/<pid>/cgroup text: the 64-hex token that names a known
 * container (cgroupfs `/docker/<id>`, systemd `docker-<id>.scope`, CRI `cri-containerd-<id>`).
 */
export function containerIdFromCgroup(text: string, known: ReadonlySet<string> | undefined): string | undefined {
  const ids = text.match(HEX64);
  if (ids === null) return undefined;
  if (known === undefined) return ids[0];
  for (const id of ids) if (known.has(id)) return id;
  return undefined;
}

const DELETED = " (deleted)";

/** A process's executable as the kernel links it (`/proc/<pid>/exe`), or undefined if unreadable. */
export function readExe(procRoot: string, pid: number): { path: string; deleted: boolean } | undefined {
  const link = readProcLink(`${procRoot}/${pid}/exe`);
  if (link === undefined) return undefined;
  return link.endsWith(DELETED) ? { path: link.slice(0, -DELETED.length), deleted: true } : { path: link, deleted: false };
}

/**
 * The rest of a process's details once its stat is read (exe, argv); undefined when it vanished
 * before its command line could be read.
 */
export function readProcessDetails(procRoot: string, pid: number, stat: { comm: string; ppid: number; startTime: bigint }): ProcInfo | undefined {
  const exe = readExe(procRoot, pid);
  const cmdline = readProcFile(`${procRoot}/${pid}/cmdline`);
  if (cmdline === undefined) return undefined;
  const argv = cmdline.split("\0");
  if (argv.length > 0 && argv[argv.length - 1] === "") argv.pop();
  return { pid, comm: stat.comm, ppid: stat.ppid, startTime: stat.startTime, exe: exe?.path ?? "", exeDeleted: exe?.deleted ?? false, argv };
}

/** Reads the details of one process; undefined if it is gone. */
export function readProcess(procRoot: string, pid: number): ProcInfo | undefined {
  const statText = readProcFile(`${procRoot}/${pid}/stat`);
  if (statText === undefined) return undefined;
  const stat = parseStat(statText);
  return stat === undefined ? undefined : readProcessDetails(procRoot, pid, stat);
}

/**
 * Scans /proc once and groups processes by container. `known` limits matches to live containers,
 * so a stale id in a cgroup path never invents a container.
 */
export function scanContainerProcesses(
  procRoot: string,
  known: ReadonlySet<string>,
  stats?: ProcScanStats,
): Map<string, ProcInfo[]> {
  const out = new Map<string, ProcInfo[]>();
  let entries: string[];
  try {
    entries = readdirSync(procRoot);
  } catch {
    return out;
  }
  for (const name of entries) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const pid = Number(name);
    if (stats) stats.pids++;
    const cg = readProcFile(`${procRoot}/${pid}/cgroup`);
    if (cg === undefined) {
      if (stats) stats.vanished++;
      continue;
    }
    const id = containerIdFromCgroup(cg, known);
    if (id === undefined) continue;
    const info = readProcess(procRoot, pid);
    if (info === undefined) {
      if (stats) stats.vanished++;
      continue;
    }
    let list = out.get(id);
    if (list === undefined) out.set(id, (list = []));
    list.push(info);
  }
  return out;
}
