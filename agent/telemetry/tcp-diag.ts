/**
 * TCP sockets of the agent's own network namespace from the kernel's sock_diag netlink interface
 * (what `ss` uses), asked for every state but TIME_WAIT. /proc/net/tcp prints every socket as
 * text, TIME_WAIT ones included: a host-network service forking per connection keeps about
 * 12,000 of those at 200 connections/s, and formatting them cost the kernel 25-45 ms per read,
 * every second. TIME_WAIT sockets have no owner and are only counted, so their number comes from
 * /proc/net/sockstat instead (`tw`).
 *
 * Only the agent's own namespace can be asked this way (netlink answers for the socket's
 * namespace, and a Node process cannot switch namespaces safely); other namespaces are read from
 * /proc/<pid>/net as before. Calls go through koffi to libc; where it cannot load, or the kernel
 * refuses, the caller falls back to /proc.
 */
import { libcFunction } from "../runtime/libc.js";

/** One socket as sock_diag reports it; addresses in network byte order inside `buf`. */
export interface DiagVisit {
  (state: number, v6: boolean, buf: Buffer, idAt: number, inode: number): void;
}

const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const IPPROTO_TCP = 6;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const TCP_TIME_WAIT = 6;
/** Every state bit but TIME_WAIT's (the kernel's states are 1..12). */
const STATES = 0x1ffe & ~(1 << TCP_TIME_WAIT);
const NLMSG_HDRLEN = 16;
/** struct inet_diag_req_v2: family, protocol, ext, pad, states (u32), inet_diag_sockid (48). */
const REQ_LEN = NLMSG_HDRLEN + 56;
/** struct inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue, wqueue, uid, inode. */
const MSG_LEN = 72;
const INODE_AT = 68;
/** A dump of many sockets arrives in parts; each recv takes one part (the kernel fills up to about 32 KiB). */
const RECV_BYTES = 64 * 1024;
/** A namespace with more sockets than this is not read whole (bounds one sample's work). */
const MAX_PARTS = 4096;

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  send: (fd: number, buf: Buffer, len: number, flags: number) => number;
  recv: (fd: number, buf: Buffer, len: number, flags: number) => number;
  close: (fd: number) => number;
}

let libc: Libc | null | undefined;

function load(): Libc | null {
  try {
    return {
      socket: libcFunction<Libc["socket"]>("int socket(int domain, int type, int protocol)"),
      send: libcFunction<Libc["send"]>("long send(int fd, const uint8_t *buf, size_t len, int flags)"),
      recv: libcFunction<Libc["recv"]>("long recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)"),
      close: libcFunction<Libc["close"]>("int close(int fd)"),
    };
  } catch {
    return null;
  }
}

function request(family: number, seq: number): Buffer {
  const b = Buffer.alloc(REQ_LEN);
  b.writeUInt32LE(REQ_LEN, 0);
  b.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
  b.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6);
  b.writeUInt32LE(seq, 8);
  b.writeUInt8(family, 16);
  b.writeUInt8(IPPROTO_TCP, 17);
  b.writeUInt32LE(STATES, 20);
  return b;
}

const buf = Buffer.alloc(RECV_BYTES);
let seq = 0;

/**
 * Dumps one family's sockets (all states but TIME_WAIT) into `visit`. Answers false when the
 * dump could not be made or was cut short (the caller then reads /proc instead).
 */
function dump(c: Libc, family: number, visit: DiagVisit): boolean {
  const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return false;
  try {
    const req = request(family, ++seq);
    if (c.send(fd, req, req.length, 0) !== req.length) return false;
    for (let part = 0; part < MAX_PARTS; part++) {
      const n = c.recv(fd, buf, buf.length, 0);
      if (n <= 0) return false;
      for (let at = 0; at + NLMSG_HDRLEN <= n; ) {
        const len = buf.readUInt32LE(at);
        const type = buf.readUInt16LE(at + 4);
        if (len < NLMSG_HDRLEN || at + len > n) return false;
        if (type === NLMSG_DONE) return true;
        if (type === NLMSG_ERROR) return false;
        if (type === SOCK_DIAG_BY_FAMILY && len >= NLMSG_HDRLEN + MSG_LEN) {
          const m = at + NLMSG_HDRLEN;
          visit(buf[m + 1] ?? 0, buf[m] === AF_INET6, buf, m + 4, buf.readUInt32LE(m + INODE_AT));
        }
        at += (len + 3) & ~3;
      }
    }
    return false;
  } finally {
    c.close(fd);
  }
}

/**
 * Visits the TCP sockets (v4 and v6, every state but TIME_WAIT) of the agent's own namespace.
 * False when sock_diag is unavailable here or a dump failed; `visit` may have seen part of it.
 */
export function diagTcpSockets(visit: DiagVisit): boolean {
  if (libc === undefined) libc = load();
  if (libc === null) return false;
  return dump(libc, AF_INET, visit) && dump(libc, AF_INET6, visit);
}

/** `tw` of the "TCP:" line of /proc/<pid>/net/sockstat (TIME_WAIT sockets of the namespace, v4 and v6). */
export function sockstatTimeWait(text: string): number | undefined {
  const m = /^TCP:.*\btw (\d+)/m.exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}
