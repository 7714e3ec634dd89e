/**
 * Samples a container's cgroup once per tick: CPU use and throttling, memory use, limit and OOM
 * kills, pid count. Works on cgroup v1, pure v2 and hybrid hosts (v1 controllers plus the unified
 * hierarchy at <cgroupRoot>/unified); where both hold a figure the v1 controller wins, because a
 * controller bound to v1 is not enabled in v2 and its v2 files are absent or incomplete.
 *
 * A figure the host cannot give is null and `unavailable[field]` says why; it is never 0. The two
 * limits are the exception: null with `memoryUnlimited` / `pidsUnlimited` set means "no limit".
 */
import { existsSync } from "node:fs";
import { readProcFile } from "../runtime/proc-files.js";

export interface CgroupPaths {
  /** controller ("cpu", "cpuacct", "memory", "pids", "name=systemd", ..., or "" for v2 unified) -> absolute dir */
  dirs: Record<string, string>;
  version: "v1" | "v2" | "hybrid";
  /** controller -> why it has no dir (not mounted, dir not found); its figures are reported unavailable with this reason. */
  missing?: Record<string, string>;
}

export interface CgroupMount {
  mountPoint: string;
  fsType: "cgroup" | "cgroup2";
  /** v1 controllers of the hierarchy ("cpu", "cpuacct", "name=systemd"); [] for cgroup2. */
  controllers: string[];
  /** The cgroup the mount shows at mountPoint, as the reader's cgroup namespace names it. */
  root: string;
}

export interface CgroupSample {
  /** v1 cpuacct.usage; v2 cpu.stat usage_usec * 1000. */
  cpuUsageNs: number | null;
  /** v1 cpu.stat nr_periods / nr_throttled / throttled_time; v2 nr_periods / nr_throttled / throttled_usec * 1000. */
  cpuPeriods: number | null;
  cpuThrottledPeriods: number | null;
  cpuThrottledNs: number | null;
  /**
   * Raw charge, page cache included: v1 memory.usage_in_bytes, v2 memory.current. This is the
   * figure the kernel holds against the limit, so it is the one that predicts an OOM kill.
   */
  memoryBytes: number | null;
  /**
   * memoryBytes minus inactive file cache (v1 memory.stat total_inactive_file, v2 inactive_file):
   * the "working set" of kubelet and `docker stats`, which cache-heavy containers do not inflate.
   */
  memoryWorkingSetBytes: number | null;
  /** v1 memory.limit_in_bytes, v2 memory.max; null with memoryUnlimited when there is no limit. */
  memoryLimitBytes: number | null;
  memoryUnlimited: boolean;
  /**
   * Times the cgroup ran out of memory. v2 memory.events oom. v1 keeps no such counter: with the
   * OOM killer on, every OOM ends in a kill, so this is memory.oom_control oom_kill (kernel >= 4.13).
   */
  oomEvents: number | null;
  /** v1 memory.oom_control oom_kill (kernel >= 4.13); v2 memory.events oom_kill. */
  oomKills: number | null;
  /** v1 memory.oom_control under_oom: tasks stuck at the limit because oom_kill_disable is set. No v2 equivalent. */
  underOom: boolean | null;
  /** pids.current (v1 and v2). */
  pidsCurrent: number | null;
  /** pids.max; null with pidsUnlimited when it reads "max". */
  pidsLimit: number | null;
  pidsUnlimited: boolean;
  /** field name of a null figure -> why (e.g. "memory controller not mounted", "cpu.stat missing"). */
  unavailable: Record<string, string>;
}

const V1_CONTROLLERS = new Set([
  "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio",
  "perf_event", "hugetlb", "pids", "rdma", "misc",
]);

function unescapeOctal(s: string): string {
  return s.indexOf("\\") < 0 ? s : s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The cgroup and cgroup2 mounts of a /proc/<pid>/mountinfo text. */
export function parseCgroupMounts(mountinfoText: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfoText.split("\n")) {
    if (line.indexOf(" - cgroup") < 0) continue;
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 4) continue;
    const fsType = f[sep + 1];
    if (fsType !== "cgroup" && fsType !== "cgroup2") continue;
    const controllers: string[] = [];
    if (fsType === "cgroup") {
      for (const opt of (f[sep + 3] ?? "").split(",")) {
        if (V1_CONTROLLERS.has(opt) || opt.startsWith("name=")) controllers.push(opt);
      }
    }
    out.push({ mountPoint: unescapeOctal(f[4] ?? ""), fsType, controllers, root: unescapeOctal(f[3] ?? "/") });
  }
  return out;
}

/** `path` relative to `root` ("" or "/sub"), or undefined when the mount does not show it. Lexical, so "/.." roots work. */
function below(root: string, path: string): string | undefined {
  if (root === "/") {
    // "/.." paths are outside the reader's namespace, which a mount rooted at "/" cannot show.
    if (path === "/.." || path.startsWith("/../")) return undefined;
    return path === "/" ? "" : path;
  }
  if (path === root) return "";
  if (path.startsWith(root) && path.charCodeAt(root.length) === 47) return path.slice(root.length);
  return undefined;
}

/** A cgroup path with the leading "/.." steps a cgroup namespace adds for cgroups outside it removed. */
function stripDotDot(path: string): string {
  let p = path;
  while (p.startsWith("/..")) p = p.slice(3);
  return p === "" ? "/" : p;
}

function join(dir: string, rel: string): string {
  if (rel === "" || rel === "/") return dir;
  return dir.endsWith("/") ? dir + rel.slice(1) : dir + rel;
}

export interface LocateOptions {
  /** Host cgroupfs, tried when the mount-derived dir does not exist (default "/sys/fs/cgroup"). */
  cgroupRoot?: string;
  /** When given, every dir is checked and the cgroupRoot fallbacks are tried; without it the result is purely lexical. */
  exists?: (dir: string) => boolean;
}

/**
 * Turns /proc/<pid>/cgroup ("id:controllers:path" lines) and the reader's cgroup mounts into the
 * dirs of that process's cgroups.
 *
 * Both texts name cgroups relative to the *reader's* cgroup namespace. A mount whose root is not
 * "/" (the agent in a container, or a bind mount of a subtree) shows only the cgroups under that
 * root, at mountPoint + (path - root); the comparison is lexical, so a root of "/../.." (host
 * cgroupfs bind-mounted into a namespaced agent) matches paths of the same shape. When no mount
 * shows the path, or `exists` says the dir is absent, the cgroupRoot conventions are tried with
 * the namespace's "/.." steps removed: v1 <cgroupRoot>/<controller>/<path> (and the co-mounted
 * name such as "cpu,cpuacct"), v2 <cgroupRoot>/unified/<path> then <cgroupRoot>/<path>.
 */
export function locateCgroups(pidCgroupText: string, mounts: CgroupMount[], o: LocateOptions = {}): CgroupPaths {
  const cgroupRoot = o.cgroupRoot ?? "/sys/fs/cgroup";
  const dirs: Record<string, string> = {};
  const missing: Record<string, string> = {};
  for (const line of pidCgroupText.split("\n")) {
    const c1 = line.indexOf(":");
    const c2 = c1 < 0 ? -1 : line.indexOf(":", c1 + 1);
    if (c2 < 0) continue;
    const list = line.slice(c1 + 1, c2);
    const path = line.slice(c2 + 1);
    if (path === "") continue;
    const v2 = list === "";
    const names = v2 ? [""] : list.split(",");
    const first = names[0] ?? "";
    const candidates: string[] = [];
    let mounted = false;
    for (const m of mounts) {
      if (v2 ? m.fsType !== "cgroup2" : m.fsType !== "cgroup" || !m.controllers.includes(first)) continue;
      mounted = true;
      const rel = below(m.root, path);
      if (rel !== undefined) candidates.push(join(m.mountPoint, rel));
    }
    const shown = candidates.length > 0;
    const exists = o.exists;
    if (exists !== undefined) {
      const abs = stripDotDot(path);
      if (v2) candidates.push(join(`${cgroupRoot}/unified`, abs), join(cgroupRoot, abs));
      else {
        for (const n of names) candidates.push(join(`${cgroupRoot}/${n.startsWith("name=") ? n.slice(5) : n}`, abs));
        if (names.length > 1) candidates.push(join(`${cgroupRoot}/${list}`, abs));
      }
    }
    const dir = exists === undefined ? candidates[0] : candidates.find((d) => exists(d));
    const label = v2 ? "cgroup2" : `${list} controller`;
    let why = "";
    if (dir === undefined) {
      if (!mounted) why = `${label} not mounted`;
      else if (!shown) why = `${label}: no mount shows ${path}`;
      else why = `${label}: no dir for ${path}`;
      if (exists !== undefined) why += ` (tried ${candidates.join(", ")})`;
    }
    for (const n of names) {
      if (dir !== undefined) dirs[n] = dir;
      else missing[n] = why;
    }
  }
  const hasV2 = "" in dirs;
  const hasV1 = Object.keys(dirs).some((k) => k !== "");
  const version = hasV2 ? (hasV1 ? "hybrid" : "v2") : "v1";
  return { dirs, version, missing };
}

/** Pids in a cgroup.procs text, one per line. */
export function parsePidList(text: string): number[] {
  const out: number[] = [];
  let n = 0;
  let digits = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      n = n * 10 + (c - 48);
      digits = true;
    } else if (c === 10) {
      if (digits) out.push(n);
      n = 0;
      digits = false;
    }
  }
  if (digits) out.push(n);
  return out;
}

/** The unsigned decimal at `at`, or undefined when there is no digit there. */
function uintAt(text: string, at: number): number | undefined {
  let n = 0;
  let i = at;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
  }
  return i === at ? undefined : n;
}

/** The value of a "key value" line (cpu.stat, memory.stat, memory.events, memory.oom_control). */
function keyed(text: string, key: string): number | undefined {
  let from = 0;
  for (;;) {
    const i = text.indexOf(key, from);
    if (i < 0) return undefined;
    const end = i + key.length;
    if ((i === 0 || text.charCodeAt(i - 1) === 10) && text.charCodeAt(end) === 32) return uintAt(text, end + 1);
    from = end;
  }
}

/** "max" -> "max"; a number -> the number; anything else -> undefined. */
function limitValue(text: string): number | "max" | undefined {
  if (text.startsWith("max")) return "max";
  return uintAt(text, 0);
}

/**
 * v1 shows "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages), which is
 * above 2^53 and so not exact as a number; anything from 2^62 up is treated as unlimited.
 */
const V1_UNLIMITED = 2 ** 62;

/** Where each figure comes from, worked out once per CgroupPaths. */
interface Plan {
  cpuUsage: string | undefined;
  cpuUsageV2: boolean;
  cpuStat: string | undefined;
  cpuStatV2: boolean;
  memV2: boolean;
  memCurrent: string | undefined;
  memLimit: string | undefined;
  memStat: string | undefined;
  memOom: string | undefined;
  pidsCurrent: string | undefined;
  pidsMax: string | undefined;
  /** feature -> why it has no source */
  why: { cpuUsage?: string; cpuStat?: string; memory?: string; pids?: string };
  /** Why a v2 fallback was taken, prefixed to its failures. */
  fallbackNote: { cpuUsage?: string; cpuStat?: string; memory?: string; pids?: string };
  files: string[];
}

function makePlan(paths: CgroupPaths): Plan {
  const d = paths.dirs;
  const unified = d[""];
  const reason = (ctrl: string): string => paths.missing?.[ctrl] ?? `${ctrl} controller not mounted`;
  const p: Plan = {
    cpuUsage: undefined, cpuUsageV2: false, cpuStat: undefined, cpuStatV2: false, memV2: false,
    memCurrent: undefined, memLimit: undefined, memStat: undefined, memOom: undefined,
    pidsCurrent: undefined, pidsMax: undefined, why: {}, fallbackNote: {}, files: [],
  };
  // In v2 cpu.stat always carries usage_usec (core accounting); throttling needs the cpu controller.
  if (d["cpuacct"] !== undefined) p.cpuUsage = `${d["cpuacct"]}/cpuacct.usage`;
  else if (unified !== undefined) {
    p.cpuUsage = `${unified}/cpu.stat`;
    p.cpuUsageV2 = true;
    if (paths.version === "hybrid") p.fallbackNote.cpuUsage = `${reason("cpuacct")}; `;
  } else p.why.cpuUsage = reason("cpuacct");
  if (d["cpu"] !== undefined) p.cpuStat = `${d["cpu"]}/cpu.stat`;
  else if (unified !== undefined) {
    p.cpuStat = `${unified}/cpu.stat`;
    p.cpuStatV2 = true;
    if (paths.version === "hybrid") p.fallbackNote.cpuStat = `${reason("cpu")}; `;
  } else p.why.cpuStat = reason("cpu");
  const mem = d["memory"];
  if (mem !== undefined) {
    p.memCurrent = `${mem}/memory.usage_in_bytes`;
    p.memLimit = `${mem}/memory.limit_in_bytes`;
    p.memStat = `${mem}/memory.stat`;
    p.memOom = `${mem}/memory.oom_control`;
  } else if (unified !== undefined) {
    p.memV2 = true;
    p.memCurrent = `${unified}/memory.current`;
    p.memLimit = `${unified}/memory.max`;
    p.memStat = `${unified}/memory.stat`;
    p.memOom = `${unified}/memory.events`;
    if (paths.version === "hybrid") p.fallbackNote.memory = `${reason("memory")}; `;
  } else p.why.memory = reason("memory");
  const pids = d["pids"] ?? unified;
  if (pids !== undefined) {
    p.pidsCurrent = `${pids}/pids.current`;
    p.pidsMax = `${pids}/pids.max`;
    if (d["pids"] === undefined && paths.version === "hybrid") p.fallbackNote.pids = `${reason("pids")}; `;
  } else p.why.pids = reason("pids");
  for (const f of [p.cpuUsage, p.cpuStat, p.memCurrent, p.memLimit, p.memStat, p.memOom, p.pidsCurrent, p.pidsMax]) {
    if (f !== undefined && !p.files.includes(f)) p.files.push(f);
  }
  return p;
}

function base(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

export interface CgroupSamplerOptions {
  /** Host /proc (default "/proc"); /proc/<pid>/cgroup is read there. */
  procRoot?: string;
  /** Host cgroupfs (default "/sys/fs/cgroup"), for fallbacks when the mounts do not show a cgroup. */
  cgroupRoot?: string;
  /** The agent's own mountinfo text; read from /proc/self/mountinfo when absent. */
  mountinfoText?: string;
}

export class CgroupSampler {
  private readonly procRoot: string;
  private readonly cgroupRoot: string;
  private mountinfoText: string | undefined;
  private mounts: CgroupMount[] | undefined;
  private readonly byContainer = new Map<string, CgroupPaths>();
  private readonly plans = new WeakMap<CgroupPaths, Plan>();

  constructor(o: CgroupSamplerOptions = {}) {
    this.procRoot = o.procRoot ?? "/proc";
    this.cgroupRoot = o.cgroupRoot ?? "/sys/fs/cgroup";
    this.mountinfoText = o.mountinfoText;
  }

  /** The cgroup mounts in the agent's own mount namespace: those are the paths it can open. */
  private cgroupMounts(): CgroupMount[] {
    if (this.mounts === undefined) {
      if (this.mountinfoText === undefined) {
        this.mountinfoText = readProcFile("/proc/self/mountinfo") ?? "";
      }
      this.mounts = parseCgroupMounts(this.mountinfoText);
    }
    return this.mounts;
  }

  /** Locates (and caches per container id) the cgroup dirs of a container from its init pid. */
  locate(containerId: string, pid: number): CgroupPaths | undefined {
    const hit = this.byContainer.get(containerId);
    if (hit !== undefined) return hit;
    const text = readProcFile(`${this.procRoot}/${pid}/cgroup`);
    if (text === undefined || text === "") return undefined;
    const paths = locateCgroups(text, this.cgroupMounts(), { cgroupRoot: this.cgroupRoot, exists: existsSync });
    // Nothing found is not cached: the process may have been caught before it joined its cgroups.
    if (Object.keys(paths.dirs).length > 0) this.byContainer.set(containerId, paths);
    return paths;
  }

  forget(containerId: string): void {
    this.byContainer.delete(containerId);
  }

  private plan(paths: CgroupPaths): Plan {
    let p = this.plans.get(paths);
    if (p === undefined) this.plans.set(paths, (p = makePlan(paths)));
    return p;
  }

  sample(paths: CgroupPaths): CgroupSample {
    const p = this.plan(paths);
    const un: Record<string, string> = {};
    const s: CgroupSample = {
      cpuUsageNs: null, cpuPeriods: null, cpuThrottledPeriods: null, cpuThrottledNs: null,
      memoryBytes: null, memoryWorkingSetBytes: null, memoryLimitBytes: null, memoryUnlimited: false,
      oomEvents: null, oomKills: null, underOom: null,
      pidsCurrent: null, pidsLimit: null, pidsUnlimited: false, unavailable: un,
    };

    // CPU. In v2 usage and throttling share cpu.stat: read it once.
    const cpuStatText = p.cpuStat === undefined ? undefined : readProcFile(p.cpuStat);
    if (p.cpuUsage === undefined) un["cpuUsageNs"] = p.why.cpuUsage ?? "no cpu accounting";
    else {
      const t = p.cpuUsage === p.cpuStat ? cpuStatText : readProcFile(p.cpuUsage);
      const v = t === undefined ? undefined : p.cpuUsageV2 ? keyed(t, "usage_usec") : uintAt(t, 0);
      if (v !== undefined) s.cpuUsageNs = p.cpuUsageV2 ? v * 1000 : v;
      else un["cpuUsageNs"] = `${p.fallbackNote.cpuUsage ?? ""}${t === undefined ? `${base(p.cpuUsage)} missing` : `no usage in ${base(p.cpuUsage)}`}`;
    }
    if (p.cpuStat === undefined) {
      const why = p.why.cpuStat ?? "cpu controller not mounted";
      un["cpuPeriods"] = un["cpuThrottledPeriods"] = un["cpuThrottledNs"] = why;
    } else if (cpuStatText === undefined) {
      const why = `${p.fallbackNote.cpuStat ?? ""}cpu.stat missing`;
      un["cpuPeriods"] = un["cpuThrottledPeriods"] = un["cpuThrottledNs"] = why;
    } else {
      const periods = keyed(cpuStatText, "nr_periods");
      const throttled = keyed(cpuStatText, "nr_throttled");
      const time = p.cpuStatV2 ? keyed(cpuStatText, "throttled_usec") : keyed(cpuStatText, "throttled_time");
      // cgroup2 shows the throttling lines only where the cpu controller is enabled.
      const why = `${p.fallbackNote.cpuStat ?? ""}${p.cpuStatV2 ? "cpu controller not enabled (cpu.stat has no nr_periods)" : "no throttling lines in cpu.stat"}`;
      if (periods !== undefined) s.cpuPeriods = periods;
      else un["cpuPeriods"] = why;
      if (throttled !== undefined) s.cpuThrottledPeriods = throttled;
      else un["cpuThrottledPeriods"] = why;
      if (time !== undefined) s.cpuThrottledNs = p.cpuStatV2 ? time * 1000 : time;
      else un["cpuThrottledNs"] = why;
    }

    // Memory.
    if (p.memCurrent === undefined || p.memLimit === undefined || p.memStat === undefined || p.memOom === undefined) {
      const why = p.why.memory ?? "memory controller not mounted";
      for (const k of ["memoryBytes", "memoryWorkingSetBytes", "memoryLimitBytes", "oomEvents", "oomKills", "underOom"]) un[k] = why;
    } else {
      const note = p.fallbackNote.memory ?? "";
      const missing = (f: string): string => `${note}${base(f)} missing${p.memV2 ? " (memory controller not enabled)" : ""}`;
      const cur = readProcFile(p.memCurrent);
      const used = cur === undefined ? undefined : uintAt(cur, 0);
      if (used !== undefined) s.memoryBytes = used;
      else un["memoryBytes"] = missing(p.memCurrent);

      const statText = readProcFile(p.memStat);
      const inactive = statText === undefined ? undefined : keyed(statText, p.memV2 ? "inactive_file" : "total_inactive_file");
      if (used !== undefined && inactive !== undefined) s.memoryWorkingSetBytes = Math.max(0, used - inactive);
      else un["memoryWorkingSetBytes"] = used === undefined ? un["memoryBytes"] ?? "" : statText === undefined ? missing(p.memStat) : "no inactive_file in memory.stat";

      const limText = readProcFile(p.memLimit);
      const lim = limText === undefined ? undefined : limitValue(limText);
      if (lim === "max" || (lim !== undefined && !p.memV2 && lim >= V1_UNLIMITED)) s.memoryUnlimited = true;
      else if (lim !== undefined) s.memoryLimitBytes = lim;
      else un["memoryLimitBytes"] = limText === undefined ? missing(p.memLimit) : `unparsable ${base(p.memLimit)}`;

      const oomText = readProcFile(p.memOom);
      if (oomText === undefined) {
        un["oomEvents"] = un["oomKills"] = un["underOom"] = missing(p.memOom);
      } else if (p.memV2) {
        const ev = keyed(oomText, "oom");
        const kills = keyed(oomText, "oom_kill");
        if (ev !== undefined) s.oomEvents = ev;
        else un["oomEvents"] = "no oom line in memory.events";
        if (kills !== undefined) s.oomKills = kills;
        else un["oomKills"] = "no oom_kill line in memory.events";
        un["underOom"] = "cgroup v2 has no under_oom";
      } else {
        const kills = keyed(oomText, "oom_kill");
        const under = keyed(oomText, "under_oom");
        if (kills !== undefined) s.oomEvents = s.oomKills = kills;
        else un["oomEvents"] = un["oomKills"] = "memory.oom_control has no oom_kill (kernel < 4.13)";
        if (under !== undefined) s.underOom = under !== 0;
        else un["underOom"] = "memory.oom_control has no under_oom";
      }
    }

    // Pids.
    if (p.pidsCurrent === undefined || p.pidsMax === undefined) {
      un["pidsCurrent"] = un["pidsLimit"] = p.why.pids ?? "pids controller not mounted";
    } else {
      const note = p.fallbackNote.pids ?? "";
      const cur = readProcFile(p.pidsCurrent);
      const n = cur === undefined ? undefined : uintAt(cur, 0);
      if (n !== undefined) s.pidsCurrent = n;
      else un["pidsCurrent"] = `${note}pids.current missing`;
      const maxText = readProcFile(p.pidsMax);
      const max = maxText === undefined ? undefined : limitValue(maxText);
      if (max === "max") s.pidsUnlimited = true;
      else if (max !== undefined) s.pidsLimit = max;
      else un["pidsLimit"] = `${note}pids.max missing`;
    }
    return s;
  }

  /** Every file `sample(paths)` reads, for a benchmark baseline that reads the same files without parsing. */
  files(paths: CgroupPaths): string[] {
    return [...this.plan(paths).files];
  }

  /**
   * The cgroup.procs file of a container: its pids, without scanning /proc. It lists only the
   * processes directly in that cgroup, which for a Docker container is all of them (runc does not
   * create child cgroups); a container that makes its own sub-cgroups hides those processes here.
   */
  procsFile(paths: CgroupPaths): string | undefined {
    const d = paths.dirs;
    const dir = d["pids"] ?? d["memory"] ?? d["cpu"] ?? d[""] ?? Object.values(d)[0];
    return dir === undefined ? undefined : `${dir}/cgroup.procs`;
  }
}
