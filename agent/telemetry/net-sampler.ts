/**
 * Samples a network namespace through any pid inside it: interface byte and packet counters from
 * /proc/<pid>/net/dev and TCP sockets by state from /proc/<pid>/net/tcp{,6}. Runs every second over
 * many containers, so the tables are scanned by index, not split into arrays of fields.
 */
import { endianness } from "node:os";
import { readProcFile, readProcLink } from "../runtime/proc-files.js";
import { diagTcpSockets, sockstatTimeWait } from "./tcp-diag.js";

export interface NetSample {
  /** Inode of /proc/<pid>/ns/net ("net:[4026531840]"). */
  netns: number;
  /** Same netns as the host (procRoot/1, or kthreadd at procRoot/2): the counters are not the container's own. */
  shared: boolean;
  /** Sums over every interface of the netns, lo included. */
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
  /** The same sums without lo: traffic that left or entered the namespace. */
  extRxBytes: number;
  extRxPackets: number;
  extTxBytes: number;
  extTxPackets: number;
  /** Sockets per state over tcp and tcp6; every state below is present, 0 when none. */
  tcpByState: Record<string, number>;
  /**
   * Sockets with an owner (inode != 0), listening ones included, by inode, so the caller can spot
   * new connections and listening sockets and find their process through /proc/<pid>/fd ->
   * socket:[inode]. TIME_WAIT sockets, and connections still in an accept queue, have no owner
   * and inode 0, so they only appear in tcpByState.
   */
  tcpSockets: Map<number, { state: string; local: string; remote: string }>;
  /** What could not be read (e.g. "tcp6": "net/tcp6 missing (IPv6 disabled)", "shared": why the host netns is unknown). */
  unavailable: Record<string, string>;
}

export interface NetDevRow {
  iface: string;
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
}

export interface TcpRow {
  state: string;
  local: string;
  remote: string;
  inode: number;
}

/** Index = the kernel's TCP state code (include/net/tcp_states.h). */
const TCP_STATES = [
  "", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
  "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
];
const TIME_WAIT = 6;

function stateName(code: number): string {
  return TCP_STATES[code] || `STATE_${code.toString(16).toUpperCase()}`;
}

/** Skips spaces from `i`; returns the index of the next non-space (or text.length). */
function skipSpaces(text: string, i: number): number {
  while (i < text.length && text.charCodeAt(i) === 32) i++;
  return i;
}

/** End of the token starting at `i` (next space, newline or end). */
function tokenEnd(text: string, i: number): number {
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 32 || c === 10) break;
  }
  return i;
}

function uintAt(text: string, i: number, end: number): number {
  let n = 0;
  for (; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
  }
  return n;
}

function hexDigit(c: number): number {
  return c <= 57 ? c - 48 : (c | 32) - 87;
}

function hexAt(text: string, i: number, len: number): number {
  let n = 0;
  for (let k = 0; k < len; k++) n = n * 16 + hexDigit(text.charCodeAt(i + k));
  return n;
}

/**
 * Calls `visit(line start, end)` for each line after the header. Lines end at "\n"; a final
 * line without one counts too.
 */
function forEachRow(text: string, visit: (start: number, end: number) => void): void {
  let i = text.indexOf("\n");
  if (i < 0) return;
  i++;
  while (i < text.length) {
    let end = text.indexOf("\n", i);
    if (end < 0) end = text.length;
    if (end > i) visit(i, end);
    i = end + 1;
  }
}

/** Parses /proc/<pid>/net/dev: per interface, receive bytes/packets (fields 1, 2) and transmit bytes/packets (fields 9, 10). */
export function parseNetDev(text: string): NetDevRow[] {
  const out: NetDevRow[] = [];
  scanNetDev(text, (name, rxB, rxP, txB, txP) => out.push({ iface: name, rxBytes: rxB, rxPackets: rxP, txBytes: txB, txPackets: txP }));
  return out;
}

/** The two header lines are skipped; the name ends at ':' (old kernels print no space after it). */
function scanNetDev(
  text: string,
  visit: (iface: string, rxBytes: number, rxPackets: number, txBytes: number, txPackets: number) => void,
): void {
  const first = text.indexOf("\n");
  let i = first < 0 ? -1 : text.indexOf("\n", first + 1);
  if (i < 0) return;
  i++;
  while (i < text.length) {
    let end = text.indexOf("\n", i);
    if (end < 0) end = text.length;
    const colon = text.indexOf(":", i);
    if (colon > 0 && colon < end) {
      let rxB = 0;
      let rxP = 0;
      let txB = 0;
      let txP = 0;
      let p = colon + 1;
      for (let k = 0; k < 10; k++) {
        p = skipSpaces(text, p);
        const e = tokenEnd(text, p);
        if (k === 0) rxB = uintAt(text, p, e);
        else if (k === 1) rxP = uintAt(text, p, e);
        else if (k === 8) txB = uintAt(text, p, e);
        else if (k === 9) txP = uintAt(text, p, e);
        p = e;
      }
      visit(text.slice(skipSpaces(text, i), colon), rxB, rxP, txB, txP);
    }
    i = end + 1;
  }
}

const littleEndian = endianness() === "LE";

/**
 * The kernel prints each 32-bit word of an address with %08X from host memory, so on a
 * little-endian host the bytes of every word come out reversed; the port is plain hex.
 */
function addrByte(text: string, at: number, byte: number): number {
  const word = byte >> 2;
  const inWord = byte & 3;
  const pos = at + word * 8 + (littleEndian ? (3 - inWord) * 2 : inWord * 2);
  return hexDigit(text.charCodeAt(pos)) * 16 + hexDigit(text.charCodeAt(pos + 1));
}

/** Decodes "0100007F:1F90" to "127.0.0.1:8080" and a 32-hex-digit address to "[::1]:8080" (RFC 5952 form). */
function decodeAddress(text: string, at: number, v6: boolean): string {
  if (!v6) {
    const port = hexAt(text, at + 9, 4);
    return `${addrByte(text, at, 0)}.${addrByte(text, at, 1)}.${addrByte(text, at, 2)}.${addrByte(text, at, 3)}:${port}`;
  }
  const port = hexAt(text, at + 33, 4);
  const g: number[] = [];
  for (let k = 0; k < 16; k += 2) g.push(addrByte(text, at, k) * 256 + addrByte(text, at, k + 1));
  return `[${formatV6(g)}]:${port}`;
}

function formatV6(g: number[]): string {
  // IPv4-mapped (::ffff:a.b.c.d), as dual-stack sockets show IPv4 peers.
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    const a = g[6] ?? 0;
    const b = g[7] ?? 0;
    return `::ffff:${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
  }
  // The longest run of two or more zero groups (the first on a tie) becomes "::".
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(0, 8);
  return `${hex(0, bestAt)}::${hex(bestAt + bestLen, 8)}`;
}

/** An address as sock_diag gives it: port (big-endian u16) at `portAt`, address bytes at `addrAt`. */
function diagAddress(buf: Buffer, portAt: number, addrAt: number, v6: boolean): string {
  const port = buf.readUInt16BE(portAt);
  if (!v6) return `${buf[addrAt]}.${buf[addrAt + 1]}.${buf[addrAt + 2]}.${buf[addrAt + 3]}:${port}`;
  const g: number[] = [];
  for (let k = 0; k < 16; k += 2) g.push(buf.readUInt16BE(addrAt + k));
  return `[${formatV6(g)}]:${port}`;
}

/**
 * Scans a /proc/net/tcp{,6} table: fields are "sl: local remote st tx:rx tr:when retrnsmt uid
 * timeout inode ...", separated by runs of spaces. `visit` gets the state code, where the local
 * and remote address tokens start, and the inode.
 */
function scanTcp(text: string, visit: (state: number, localAt: number, remoteAt: number, inode: number) => void): void {
  forEachRow(text, (start, end) => {
    let p = skipSpaces(text, start);
    p = tokenEnd(text, p); // "sl:"
    const localAt = skipSpaces(text, p);
    p = tokenEnd(text, localAt);
    const remoteAt = skipSpaces(text, p);
    p = tokenEnd(text, remoteAt);
    const stAt = skipSpaces(text, p);
    if (stAt + 2 > end) return;
    const state = hexAt(text, stAt, 2);
    p = stAt + 2;
    // Skip tx:rx, tr:when, retrnsmt, uid, timeout; then the inode.
    for (let k = 0; k < 5; k++) p = tokenEnd(text, skipSpaces(text, p));
    const inodeAt = skipSpaces(text, p);
    visit(state, localAt, remoteAt, uintAt(text, inodeAt, end));
  });
}

/** Parses /proc/<pid>/net/tcp (v6 false) or tcp6 (v6 true); addresses as "127.0.0.1:8080" / "[::1]:8080". */
export function parseProcNetTcp(text: string, v6: boolean): TcpRow[] {
  const out: TcpRow[] = [];
  scanTcp(text, (state, localAt, remoteAt, inode) => {
    out.push({ state: stateName(state), local: decodeAddress(text, localAt, v6), remote: decodeAddress(text, remoteAt, v6), inode });
  });
  return out;
}

/** "net:[4026531840]" -> 4026531840 */
function nsInode(link: string): number | undefined {
  const open = link.indexOf("[");
  if (open < 0) return undefined;
  const close = link.indexOf("]", open);
  const n = uintAt(link, open + 1, close < 0 ? link.length : close);
  return n > 0 ? n : undefined;
}

export interface NetSamplerOptions {
  /** Host /proc (default "/proc"). Must show the host's pid namespace for `shared` to be right. */
  procRoot?: string;
  /**
   * Ask the kernel through sock_diag for the sockets of the agent's own namespace instead of
   * reading its /proc tables (default true with the real /proc): the same answer without the
   * cost of printing every TIME_WAIT socket as text.
   */
  sockDiag?: boolean;
}

export class NetSampler {
  private readonly procRoot: string;
  private hostNetns: number | undefined;
  private pass = Number.NaN;
  private readonly byNetns = new Map<number, NetSample>();
  /** The agent's own netns while sock_diag answers for it; null once it has not, or when off. */
  private diagNetns: number | null | undefined;

  constructor(o: NetSamplerOptions = {}) {
    this.procRoot = o.procRoot ?? "/proc";
    if (o.sockDiag === false || (o.sockDiag === undefined && this.procRoot !== "/proc")) this.diagNetns = null;
  }

  /** How the last samples read TCP sockets: "sock_diag" for the agent's own netns, else "proc". */
  get tcpSource(): "sock_diag" | "proc" {
    return typeof this.diagNetns === "number" ? "sock_diag" : "proc";
  }

  /** netns inode of a pid, or undefined if it vanished. */
  netnsOf(pid: number): number | undefined {
    const link = readProcLink(`${this.procRoot}/${pid}/ns/net`);
    return link === undefined ? undefined : nsInode(link);
  }

  /**
   * The host's netns. pid 1 first; some inits refuse ns readlinks even to root (seen on this
   * project's CI host), so then kthreadd (pid 2): kernel threads always live in init_net.
   */
  private host(): number | undefined {
    if (this.hostNetns === undefined) this.hostNetns = this.netnsOf(1) ?? this.netnsOf(2);
    return this.hostNetns;
  }

  /**
   * Samples the netns `pid` lives in. Cached per netns within one `pass` (a number the caller bumps
   * every round), so 50 host-network containers read the host tables once per pass; the cached
   * sample is shared between callers and must not be changed. Undefined when the pid vanished.
   */
  sample(pid: number, pass: number): NetSample | undefined {
    const netns = this.netnsOf(pid);
    if (netns === undefined) return undefined;
    if (pass !== this.pass) {
      this.byNetns.clear();
      this.pass = pass;
    }
    const hit = this.byNetns.get(netns);
    if (hit !== undefined) return hit;

    const base = `${this.procRoot}/${pid}/net`;
    const dev = readProcFile(`${base}/dev`, "latin1");
    if (dev === undefined) return undefined;
    if (this.diagNetns === undefined) this.diagNetns = nsInode(readProcLink("/proc/self/ns/net") ?? "") ?? null;
    const byDiag = netns === this.diagNetns;
    const tcp = byDiag ? undefined : readProcFile(`${base}/tcp`, "latin1");
    const tcp6 = byDiag ? undefined : readProcFile(`${base}/tcp6`, "latin1");
    // A table missing after dev was read is most often the pid exiting in between.
    if (!byDiag && (tcp === undefined || tcp6 === undefined) && this.netnsOf(pid) === undefined) return undefined;

    const unavailable: Record<string, string> = {};
    const hostNs = this.host();
    if (hostNs === undefined) unavailable["shared"] = `host netns unknown: ${this.procRoot}/1/ns/net and ${this.procRoot}/2/ns/net unreadable`;
    const s: NetSample = {
      netns,
      shared: netns === hostNs,
      rxBytes: 0, rxPackets: 0, txBytes: 0, txPackets: 0,
      extRxBytes: 0, extRxPackets: 0, extTxBytes: 0, extTxPackets: 0,
      tcpByState: {},
      tcpSockets: new Map(),
      unavailable,
    };
    scanNetDev(dev, (iface, rxB, rxP, txB, txP) => {
      s.rxBytes += rxB;
      s.rxPackets += rxP;
      s.txBytes += txB;
      s.txPackets += txP;
      if (iface !== "lo") {
        s.extRxBytes += rxB;
        s.extRxPackets += rxP;
        s.extTxBytes += txB;
        s.extTxPackets += txP;
      }
    });

    const counts = new Array<number>(TCP_STATES.length).fill(0);
    let other: Record<string, number> | undefined;
    const count = (state: number): void => {
      if (state < counts.length) counts[state] = (counts[state] ?? 0) + 1;
      else {
        other ??= {};
        const name = stateName(state);
        other[name] = (other[name] ?? 0) + 1;
      }
    };
    const addTable = (text: string, v6: boolean): void => {
      scanTcp(text, (state, localAt, remoteAt, inode) => {
        count(state);
        if (inode !== 0) {
          s.tcpSockets.set(inode, { state: stateName(state), local: decodeAddress(text, localAt, v6), remote: decodeAddress(text, remoteAt, v6) });
        }
      });
    };
    const diagDone =
      byDiag &&
      diagTcpSockets((state, v6, buf, idAt, inode) => {
        count(state);
        if (inode !== 0) s.tcpSockets.set(inode, { state: stateName(state), local: diagAddress(buf, idAt, idAt + 4, v6), remote: diagAddress(buf, idAt + 2, idAt + 20, v6) });
      });
    const timeWait = diagDone ? sockstatTimeWait(readProcFile(`${base}/sockstat`, "latin1") ?? "") : undefined;
    if (byDiag && (!diagDone || timeWait === undefined)) {
      // sock_diag or sockstat did not answer here: /proc from now on, this sample included.
      this.diagNetns = null;
      return this.sample(pid, pass);
    }
    if (timeWait !== undefined) counts[TIME_WAIT] = timeWait;
    if (tcp !== undefined) addTable(tcp, false);
    else if (!byDiag) unavailable["tcp"] = "net/tcp missing";
    if (tcp6 !== undefined) addTable(tcp6, true);
    else if (!byDiag) unavailable["tcp6"] = "net/tcp6 missing (IPv6 disabled in this kernel)";
    for (let i = 1; i < TCP_STATES.length; i++) s.tcpByState[TCP_STATES[i] ?? ""] = counts[i] ?? 0;
    if (other !== undefined) Object.assign(s.tcpByState, other);

    this.byNetns.set(netns, s);
    return s;
  }

  /**
   * Every file `sample(pid, pass)` reads through /proc (besides the ns/net link), for a benchmark
   * baseline. For the agent's own namespace the sampler asks sock_diag and reads sockstat instead
   * of the two tables; the tables stay in the baseline as the nearest file-read equivalent of that
   * dump (both walk the kernel's whole TCP hash).
   */
  files(pid: number): string[] {
    const base = `${this.procRoot}/${pid}/net`;
    return [`${base}/dev`, `${base}/tcp`, `${base}/tcp6`];
  }
}

