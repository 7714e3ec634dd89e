// The README's openssl commands for the builders' engines, run as written: the certificates they
// make must give mutual TLS the way `dockerd --tlsverify` and the aggregator's client use it
// (server named by the node's IP, client certificate required and from the builders' own CA),
// and the Secrets the README creates must never carry a CA key.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';

const repoRoot =
  process.env['SHADOWLAYER_REPO_ROOT'] ??
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const readme = await readFile(path.join(repoRoot, 'deploy', 'README.md'), 'utf8');

/** The fenced ```sh blocks of the README, in order. */
function shellBlocks(text: string): string[] {
  return [...text.matchAll(/^\s*```sh\n([\s\S]*?)^\s*```$/gm)].map((m) => String(m[1]));
}

const certBlock = shellBlocks(readme).find((b) => b.includes('openssl req -x509'));

/** Runs the README's certificate commands in a new directory, for the given build node addresses. */
async function makeBuilderTls(builderIps: string): Promise<string> {
  assert.ok(certBlock, 'deploy/README.md has no openssl block for the builders');
  const dir = await mkdtemp(path.join(tmpdir(), 'sl-builder-tls-'));
  await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', certBlock], {
    cwd: dir,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', BUILDER_IPS: builderIps },
  });
  return path.join(dir, 'builder-tls');
}

interface Pem {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}
async function pems(dir: string): Promise<Pem> {
  const [ca, cert, key] = await Promise.all(['ca.pem', 'cert.pem', 'key.pem'].map((f) => readFile(path.join(dir, f))));
  return { ca: ca as Buffer, cert: cert as Buffer, key: key as Buffer };
}

/** Connects as a client; resolves with what happened, never rejects. */
function dial(port: number, host: string, client: Partial<Pem> & { ca: Buffer }): Promise<{ ok: boolean; error?: string }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ port, host, ...client, minVersion: 'TLSv1.2' });
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
    // With TLS 1.3 a refused client certificate arrives as an alert after the client's handshake
    // completes, so success is the server's answer, not the handshake.
    socket.once('data', (d) => {
      resolve({ ok: d.toString() === 'ok' });
      socket.end();
    });
    socket.once('error', (err: Error & { code?: string }) => resolve({ ok: false, error: err.code ?? err.message }));
    socket.once('close', () => resolve({ ok: false, error: 'closed' }));
  });
}

describe('deploy/README.md: the builders\' TLS material', () => {
  let dir = '';
  let other = '';
  let server: tls.Server | undefined;
  let port = 0;

  before(async () => {
    dir = await makeBuilderTls('127.0.0.1 192.0.2.22');
    other = await makeBuilderTls('127.0.0.1');
    const s = await pems(path.join(dir, 'server'));
    // As dockerd --tlsverify: its certificate, and client certificates required from its CA.
    server = tls.createServer({ ...s, requestCert: true, rejectUnauthorized: true }, (socket) => socket.end('ok'));
    server.on('tlsClientError', () => {});
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    for (const d of [dir, other]) if (d !== '') await rm(path.dirname(d), { recursive: true, force: true });
  });

  it('the aggregator\'s client certificate reaches an engine named by its node\'s IP', async () => {
    const client = await pems(path.join(dir, 'client'));
    assert.deepEqual(await dial(port, '127.0.0.1', client), { ok: true });
  });

  it('the engine refuses a client with no certificate, one from another CA, or a server certificate', async () => {
    const client = await pems(path.join(dir, 'client'));
    assert.equal((await dial(port, '127.0.0.1', { ca: client.ca })).ok, false, 'no client certificate');
    const foreign = await pems(path.join(other, 'client'));
    assert.equal((await dial(port, '127.0.0.1', { ...foreign, ca: client.ca })).ok, false, 'another CA\'s client');
    // Its extendedKeyUsage is serverAuth only.
    const serverPair = await pems(path.join(dir, 'server'));
    assert.equal((await dial(port, '127.0.0.1', { ...serverPair, ca: client.ca })).ok, false, 'a server certificate as client');
  });

  it('the client refuses an engine under a name its certificate does not carry', async () => {
    const client = await pems(path.join(dir, 'client'));
    const r = await dial(port, 'localhost', client);
    assert.equal(r.ok, false);
    assert.equal(r.error, 'ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('the README\'s Secrets carry the docker --tlsverify layout and never a CA key', () => {
    const secrets = new Map<string, string[]>();
    for (const m of readme.matchAll(/create secret generic (\S+)((?:[^\n]*\\\n)*[^\n]*)/g)) {
      secrets.set(String(m[1]), [...String(m[2]).matchAll(/--from-file=(\S+)/g)].map((f) => String(f[1])));
    }
    assert.deepEqual(secrets.get('shadowlayer-builder-tls'), ['ca.pem', 'cert.pem', 'key.pem'].map((f) => `builder-tls/server/${f}`));
    assert.deepEqual(secrets.get('shadowlayer-builder-client-tls'), ['ca.pem', 'cert.pem', 'key.pem'].map((f) => `builder-tls/client/${f}`));
    assert.ok(secrets.get('shadowlayer-aggregator-tls')?.includes('cosign.key=sl/tls/cosign.key'));
    assert.ok(secrets.get('shadowlayer-agent-tls')?.includes('cosign.pub=sl/tls/cosign.pub'));
    assert.ok(secrets.size >= 5, [...secrets.keys()].join(', '));
    for (const [name, files] of secrets) {
      for (const f of files) assert.doesNotMatch(f, /(^|[=/])ca(\.key|-key\.pem)$/, `${name} must not hold a CA key`);
    }
  });
});
