/**
 * What `shadowlayer up` leaves in its data directory so client commands find it with no flags:
 * endpoint.json (the aggregator's address, whether TLS is on) next to tls/ (the certificates).
 */
import { join, resolve } from "node:path";
import { readFile, rm } from "node:fs/promises";
import { tlsDirOf } from "../common/config.js";
import { Code, ShadowError } from "../common/errors.js";
import { writePrivateFile } from "../common/private-files.js";

export interface Endpoint {
  address: string;
  insecure: boolean;
  pid: number;
  node: string;
  startedAt: string;
}

export function dataPaths(dataDir: string) {
  const d = resolve(dataDir);
  return { dir: d, tls: tlsDirOf(d), endpoint: join(d, "endpoint.json") };
}

/** 0600 like everything in the data dir (it tells where to connect and which process serves). */
export async function writeEndpoint(dataDir: string, e: Endpoint): Promise<void> {
  await writePrivateFile(dataPaths(dataDir).endpoint, `${JSON.stringify(e, null, 2)}\n`);
}

export async function removeEndpoint(dataDir: string): Promise<void> {
  await rm(dataPaths(dataDir).endpoint, { force: true });
}

export async function readEndpoint(dataDir: string): Promise<Endpoint> {
  const p = dataPaths(dataDir).endpoint;
  let text: string;
  try {
    text = await readFile(p, "utf8");
  } catch (err) {
    throw new ShadowError(Code.FailedPrecondition, `no running shadowlayer found (${p} is missing): start one with \`shadowlayer up --data-dir ${dataDir}\`, or pass --aggregator`, { cause: err });
  }
  const o = JSON.parse(text) as Partial<Endpoint>;
  if (typeof o.address !== "string") throw new ShadowError(Code.FailedPrecondition, `${p} has no address`);
  return { address: o.address, insecure: o.insecure === true, pid: o.pid ?? 0, node: o.node ?? "", startedAt: o.startedAt ?? "" };
}
