/**
 * A flat apt repository on loopback for the patch strategy's end-to-end test: the fixed .deb(s)
 * and their `Packages`/`Packages.gz` index (dpkg-scanpackages), served by a Node http server on a
 * free port. apt takes it with `[trusted=yes]` (no Release file, as for any flat local mirror).
 */
import { execFile } from "node:child_process";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";

const execFileP = promisify(execFile);

export interface PackageMirror {
  /** http://127.0.0.1:<port>/ */
  url: string;
  /** Every path asked for, in order (what the package manager fetched). */
  requests: string[];
  close(): Promise<void>;
}

/**
 * The .debs for `name=version` specs, fetched once into `cacheDir` by the host's apt (host setup,
 * like the rootfs itself); later runs find them there.
 */
export async function downloadDebs(specs: readonly string[], cacheDir: string): Promise<string[]> {
  await mkdir(cacheDir, { recursive: true });
  const have = async (): Promise<string[] | undefined> => {
    const files = await readdir(cacheDir);
    const found = specs.map((s) => {
      const [name = "", version = ""] = s.split("=");
      const encoded = version.replace(/:/g, "%3a");
      return files.find((f) => f.startsWith(`${name}_${encoded}_`) && f.endsWith(".deb"));
    });
    return found.every((f) => f !== undefined) ? found.map((f) => join(cacheDir, f ?? "")) : undefined;
  };
  const cached = await have();
  if (cached !== undefined) return cached;
  try {
    await execFileP("apt-get", ["download", ...specs], { cwd: cacheDir });
  } catch {
    await execFileP("apt-get", ["update", "-qq"]);
    await execFileP("apt-get", ["download", ...specs], { cwd: cacheDir });
  }
  const fetched = await have();
  if (fetched === undefined) throw new Error(`apt-get download ${specs.join(" ")} left no .deb in ${cacheDir}`);
  return fetched;
}

/** Makes the repository in `dir` from `debs` and serves it on 127.0.0.1. */
export async function startPackageMirror(dir: string, debs: readonly string[]): Promise<PackageMirror> {
  await mkdir(dir, { recursive: true });
  for (const d of debs) await copyFile(d, join(dir, d.slice(d.lastIndexOf("/") + 1)));
  const { stdout } = await execFileP("dpkg-scanpackages", ["--multiversion", "."], { cwd: dir, maxBuffer: 64 * 1024 * 1024 });
  await writeFile(join(dir, "Packages"), stdout);
  await writeFile(join(dir, "Packages.gz"), gzipSync(Buffer.from(stdout)));

  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://mirror").pathname);
    requests.push(path);
    const name = path.replace(/^\/+/, "").replace(/^\.\//, "");
    if ((req.method !== "GET" && req.method !== "HEAD") || name === "" || name.includes("/") || name.startsWith(".")) {
      res.writeHead(404).end();
      return;
    }
    const file = join(dir, name);
    stat(file).then(
      (st) => {
        if (!st.isFile()) {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { "content-length": st.size, "content-type": "application/octet-stream" });
        if (req.method === "HEAD") res.end();
        else createReadStream(file).pipe(res);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
