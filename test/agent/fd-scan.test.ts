/**
 * A process's fd directory is read only as far as the question needs and never past a cap: a
 * container's process can hold a million fds, and the owner of a new socket is looked for every
 * second.
 */
import assert from "node:assert/strict";
import { closeSync, openSync, readlinkSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { ProcSampler } from "../../agent/telemetry/proc-sampler.js";

const inodeOf = (fd: number) => Number(/socket:\[(\d+)\]/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1]);
const fdOf = (s: Socket) => (s as unknown as { _handle: { fd: number } })._handle.fd;

describe("socket owners from /proc/<pid>/fd", () => {
  let srv: Server;
  const socks: Socket[] = [];
  const filler: number[] = [];
  before(async () => {
    srv = createServer(() => undefined);
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    const dial = () => new Promise<Socket>((r) => { const c = connect(port, "127.0.0.1", () => r(c)); });
    socks.push(await dial());
    // 400 fds after the first socket (a machine's fd limit may be low), then one more socket past a cap of 300.
    for (let i = 0; i < 400; i++) filler.push(openSync("/dev/null", "r"));
    socks.push(await dial());
  });
  after(() => {
    for (const s of socks) s.destroy();
    for (const fd of filler) closeSync(fd);
    srv.close();
  });

  it("finds the wanted inodes only, and stops at the cap", () => {
    const proc = new ProcSampler();
    const [near, far] = socks.map((s) => inodeOf(fdOf(s)));
    assert.ok(near !== undefined && far !== undefined && near > 0 && far > 0);
    assert.deepEqual(proc.socketInodes(process.pid, new Set([near, 1])), [near], "a wanted one found, an absent one not invented");
    assert.deepEqual(proc.socketInodes(process.pid, new Set([far])), [far], "within the default cap (8,192)");
    assert.deepEqual(proc.socketInodes(process.pid, new Set([far]), 300), [], "past the cap the directory is not read");
    assert.deepEqual(proc.socketInodes(process.pid, new Set([near]), 300), [near]);
    assert.deepEqual(proc.socketInodes(999_999_999, new Set([near])), [], "a vanished process holds nothing");
  });
});
