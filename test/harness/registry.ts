/**
 * A real OCI registry for tests: Debian's docker-registry (distribution 2.8) on a free loopback
 * port, TLS with a CA made here, htpasswd (bcrypt) basic auth, delete enabled, filesystem storage
 * in a temp dir. The Docker engine trusts it through /etc/docker/certs.d/HOST/ca.crt. stop() and
 * start() take it down and bring it back on the same port with the same data (a registry outage).
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { RegistryAuth } from "../../common/registry-client.js";
import { startTokenServer, type TokenServer } from "./registry-token-server.js";
import { freePort } from "../bench/cli-process.js";

const execFileP = promisify(execFile);

export interface TestRegistry {
  /** 127.0.0.1:PORT */
  host: string;
  ca: Buffer;
  caPath: string;
  auth: RegistryAuth;
  /** `username:password`, as `readRegistryAuth` reads it. */
  authFile: string;
  dir: string;
  /** The registry's filesystem storage root (tests corrupt blobs in it). */
  storageDir: string;
  /** Kills the registry (an outage). */
  stop(): Promise<void>;
  /** Again after stop(): same port and data. */
  start(): Promise<void>;
  /** In token mode: the token service's realm and how many tokens it was asked for. */
  token?: { realm: string; requests(): number };
  /** Stops for good: removes the data, the certificates and the engine's trust of the CA. */
  close(): Promise<void>;
}

let installed: Promise<void> | undefined;

async function has(cmd: string): Promise<boolean> {
  try {
    await execFileP("sh", ["-c", `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

/** apt-get installs docker-registry and apache2-utils (htpasswd) once, when either is absent. */
function ensurePackages(): Promise<void> {
  installed ??= (async () => {
    if ((await has("docker-registry")) && (await has("htpasswd"))) return;
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const lock = ["-o", "DPkg::Lock::Timeout=300"];
    await execFileP("apt-get", [...lock, "update", "-qq"], { env, maxBuffer: 16 << 20 });
    await execFileP("apt-get", [...lock, "install", "-y", "-qq", "docker-registry", "apache2-utils"], { env, maxBuffer: 16 << 20 });
  })();
  return installed;
}


/** A CA and a server certificate for IP 127.0.0.1 (P-256, two days). */
async function makeCerts(dir: string): Promise<{ caPath: string; certPath: string; keyPath: string }> {
  const caKey = join(dir, "ca.key");
  const caPath = join(dir, "ca.crt");
  const keyPath = join(dir, "server.key");
  const csr = join(dir, "server.csr");
  const certPath = join(dir, "server.crt");
  const ext = join(dir, "server.ext");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await execFileP("openssl", ["req", "-x509", ...ec, "-keyout", caKey, "-out", caPath, "-days", "2", "-subj", "/CN=shadowlayer test registry CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  await execFileP("openssl", ["req", "-new", ...ec, "-keyout", keyPath, "-out", csr, "-subj", "/CN=127.0.0.1"]);
  await writeFile(ext, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n");
  await execFileP("openssl", ["x509", "-req", "-in", csr, "-CA", caPath, "-CAkey", caKey, "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", certPath]);
  return { caPath, certPath, keyPath };
}

/** GET /v2/ until it answers 401 (up and asking for credentials), or the child exits. */
async function waitUp(port: number, ca: Buffer, child: ChildProcess, stderr: () => string): Promise<void> {
  const end = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`docker-registry exited (${child.exitCode ?? child.signalCode}): ${stderr()}`);
    const status = await new Promise<number>((resolve) => {
      const req = request({ host: "127.0.0.1", port, path: "/v2/", ca, timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("timeout", () => req.destroy());
      req.on("error", () => resolve(0));
      req.end();
    });
    if (status === 401) return;
    if (Date.now() > end) throw new Error(`docker-registry on 127.0.0.1:${port} did not answer 401 on /v2/ within 20 s (last ${status}): ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const live = new Set<{ child?: ChildProcess; dir: string; certsD: string }>();
process.once("exit", () => {
  for (const r of live) {
    r.child?.kill("SIGKILL");
    rmSync(r.certsD, { recursive: true, force: true });
    rmSync(r.dir, { recursive: true, force: true });
  }
});

/** Installs docker-registry and apache2-utils when absent, makes a CA + server cert for 127.0.0.1, an htpasswd (bcrypt), starts `docker-registry serve` on a free loopback port with delete enabled, writes /etc/docker/certs.d/127.0.0.1:PORT/ca.crt. */
export async function startRegistry(opts: { username?: string; password?: string; /** Bearer token auth (a token service here) instead of htpasswd. */ tokenAuth?: boolean } = {}): Promise<TestRegistry> {
  await ensurePackages();
  const dir = await mkdtemp(join(tmpdir(), "sl-registry-"));
  const auth: RegistryAuth = { username: opts.username ?? "shadow", password: opts.password ?? `pw-${process.pid}-${Date.now()}` };
  const { caPath, certPath, keyPath } = await makeCerts(dir);
  const ca = await readFile(caPath);
  const htpasswd = join(dir, "htpasswd");
  const hp = execFile("htpasswd", ["-B", "-i", "-c", htpasswd, auth.username]);
  hp.stdin?.end(auth.password);
  await new Promise<void>((resolve, reject) => hp.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`htpasswd exited ${code}`)))));
  const authFile = join(dir, "auth");
  await writeFile(authFile, `${auth.username}:${auth.password}\n`, { mode: 0o600 });
  const storageDir = join(dir, "data");
  await mkdir(storageDir);

  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const certsD = join("/etc/docker/certs.d", host);
  let tokenServer: TokenServer | undefined;
  if (opts.tokenAuth === true) {
    const [cert, key, caKey] = await Promise.all([readFile(certPath), readFile(keyPath), readFile(join(dir, "ca.key"))]);
    tokenServer = await startTokenServer({ tls: { cert, key }, signer: { cert: ca, key: caKey }, auth, service: "shadowlayer-test", issuer: "shadowlayer-test-tokens" });
  }
  const authConfig =
    tokenServer === undefined
      ? ["auth:", "  htpasswd:", "    realm: shadowlayer-test", `    path: ${htpasswd}`]
      : ["auth:", "  token:", `    realm: ${tokenServer.realm}`, "    service: shadowlayer-test", "    issuer: shadowlayer-test-tokens", `    rootcertbundle: ${caPath}`];
  const config = join(dir, "config.yml");
  await writeFile(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: error",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${storageDir}`,
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: ${host}`,
      `  secret: ${Date.now().toString(36)}${process.pid}`,
      "  tls:",
      `    certificate: ${certPath}`,
      `    key: ${keyPath}`,
      ...authConfig,
      "",
    ].join("\n"),
  );
  await mkdir(certsD, { recursive: true });
  await writeFile(join(certsD, "ca.crt"), ca);

  const entry: { child?: ChildProcess; dir: string; certsD: string } = { dir, certsD };
  live.add(entry);
  let stderrTail = "";
  const start = async (): Promise<void> => {
    if (entry.child !== undefined) return;
    // Killed with this process even when it dies by a signal (no exit handler runs then).
    const argv = (await has("setpriv")) ? ["setpriv", "--pdeathsig", "KILL", "docker-registry"] : ["docker-registry"];
    const child = spawn(argv[0] as string, [...argv.slice(1), "serve", config], { stdio: ["ignore", "ignore", "pipe"] });
    child.stderr?.on("data", (d: Buffer) => {
      stderrTail = (stderrTail + d.toString("utf8")).slice(-2000);
    });
    entry.child = child;
    try {
      await waitUp(port, ca, child, () => stderrTail);
    } catch (err) {
      child.kill("SIGKILL");
      delete entry.child;
      throw err;
    }
  };
  const stop = async (): Promise<void> => {
    const child = entry.child;
    if (child === undefined) return;
    delete entry.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    // Killed as a crash would (its graceful shutdown waits for open connections).
    child.kill("SIGKILL");
    await exited;
  };
  const close = async (): Promise<void> => {
    await stop();
    await tokenServer?.close();
    live.delete(entry);
    await rm(certsD, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await start();
  } catch (err) {
    await close();
    throw err;
  }
  return { host, ca, caPath, auth, authFile, dir, storageDir, stop, start, close, ...(tokenServer !== undefined ? { token: tokenServer } : {}) };
}
