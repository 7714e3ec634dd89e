/**
 * A client of the OCI Distribution API (the registry shadows are pushed to and agents pull from):
 * https only with the registry's CA pinned when one is given, Basic auth and the Bearer token
 * challenge real registries answer with, every read bounded, and every content digest checked.
 * Repository names, tags and digests are checked against the distribution grammar before they go
 * into a URL: they can come from image labels, which an attacker may write.
 */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import { pipeline, Readable, Transform, type TransformCallback } from "node:stream";
import { Code, ShadowError, errnoCode } from "./errors.js";

export interface RegistryAuth {
  username: string;
  password: string;
}

export interface RegistryEndpoint {
  /** host:port (loopback in tests). https always; CA PEM to trust (else the system roots). */
  host: string;
  /** Trusted for every connection this client makes: the registry, its token realm, blob redirects. */
  ca?: Buffer;
  auth?: RegistryAuth;
  /** Per request (idle time for blob streams); default 30 s. */
  timeoutMs?: number;
}

export const MANIFEST_MEDIA_TYPES = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
} as const;
const ACCEPTED_MANIFESTS: ReadonlySet<string> = new Set(Object.values(MANIFEST_MEDIA_TYPES));

/** Manifests (and tag lists) are small; a registry sending more is broken or hostile. */
export const MANIFEST_MAX_BYTES = 4 * 1024 * 1024;
const ERROR_BODY_MAX_BYTES = 64 * 1024;
const TOKEN_MAX_BYTES = 64 * 1024;
const MAX_REDIRECTS = 3;
const MAX_TAG_PAGES = 1000;
const DEFAULT_TIMEOUT_MS = 30_000;

// The distribution reference grammar (docker/distribution reference/regexp.go), sha256 digests only.
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const REPOSITORY_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const REPOSITORY_MAX = 255;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const DOMAIN_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?";
const HOST_RE = new RegExp(`^(?:${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?$`);

/** A value for an error message: as is when plain, else JSON-quoted (newlines and escapes shown, not run). */
function shown(s: string): string {
  const cut = s.length > 120 ? `${s.slice(0, 120)}…` : s;
  return /^[\w.@+:/-]+$/.test(cut) ? cut : JSON.stringify(cut);
}

export function assertRepository(repo: string): void {
  if (typeof repo !== "string" || repo.length > REPOSITORY_MAX || !REPOSITORY_RE.test(repo)) {
    throw new ShadowError(Code.InvalidArgument, `invalid repository name ${shown(String(repo))}: lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'`);
  }
}

export function assertDigest(digest: string): void {
  if (typeof digest !== "string" || !DIGEST_RE.test(digest)) {
    throw new ShadowError(Code.InvalidArgument, `invalid digest ${shown(String(digest))}: expected sha256:<64 lowercase hex>`);
  }
}

export function isDigest(reference: string): boolean {
  return DIGEST_RE.test(reference);
}

/** A tag or a sha256 digest. */
export function assertReference(reference: string): void {
  if (typeof reference !== "string" || !(TAG_RE.test(reference) || DIGEST_RE.test(reference))) {
    throw new ShadowError(Code.InvalidArgument, `invalid tag or digest ${shown(String(reference))}`);
  }
}

function assertHost(host: string): void {
  const port = /:(\d+)$/.exec(host)?.[1];
  if (!HOST_RE.test(host) || (port !== undefined && (Number(port) < 1 || Number(port) > 65535))) {
    throw new ShadowError(Code.InvalidArgument, `invalid registry host ${shown(host)}: expected host[:port]`);
  }
}

/** `--registry HOST:PORT/REPO[/…]` → { host, repository } (validated: no scheme, lowercase repo path). */
export function parseRegistryRef(s: string): { host: string; repository: string } {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    throw new ShadowError(Code.InvalidArgument, `registry ${shown(s)}: give host:port/repository without a scheme (https is always used)`);
  }
  const slash = s.indexOf("/");
  if (slash <= 0) throw new ShadowError(Code.InvalidArgument, `registry ${shown(s)}: expected host[:port]/repository`);
  const host = s.slice(0, slash);
  const repository = s.slice(slash + 1);
  if (!host.includes(".") && !host.includes(":") && host !== "localhost") {
    throw new ShadowError(Code.InvalidArgument, `registry ${shown(s)}: ${shown(host)} does not look like a registry host (give host[:port] first, e.g. registry.example:5000/shadows)`);
  }
  assertHost(host);
  assertRepository(repository);
  return { host, repository };
}

/** A file holding `username:password` on its first line (0600 recommended) → RegistryAuth. */
export async function readRegistryAuth(path: string): Promise<RegistryAuth> {
  let text: string;
  try {
    const fh = await open(path, "r");
    try {
      const buf = Buffer.alloc(ERROR_BODY_MAX_BYTES);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      text = buf.subarray(0, bytesRead).toString("utf8");
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new ShadowError(Code.InvalidArgument, `cannot read the registry auth file ${path}: ${errnoCode(err) ?? String(err)}`, { cause: err });
  }
  const line = (text.split("\n")[0] ?? "").replace(/\r$/, "");
  const colon = line.indexOf(":");
  const username = colon > 0 ? line.slice(0, colon) : "";
  const password = colon > 0 ? line.slice(colon + 1) : "";
  // The content is never echoed: it holds a password.
  if (username === "" || password === "" || /[\x00-\x1f\x7f]/.test(line)) {
    throw new ShadowError(Code.InvalidArgument, `registry auth file ${path}: expected "username:password" on its first line`);
  }
  return { username, password };
}

/** Parameters of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge. */
export function parseBearerChallenge(header: string | undefined): { realm: string; service?: string; scope?: string } | undefined {
  if (header === undefined || !/^\s*bearer\s/i.test(header)) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  const rest = header.replace(/^\s*bearer\s+/i, "");
  for (let m = re.exec(rest); m !== null; m = re.exec(rest)) {
    params[(m[1] ?? "").toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : (m[3] ?? "");
  }
  const realm = params["realm"];
  if (realm === undefined || realm === "") return undefined;
  return { realm, ...(params["service"] !== undefined ? { service: params["service"] } : {}), ...(params["scope"] !== undefined ? { scope: params["scope"] } : {}) };
}

function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Reads at most `max` bytes of a response; more is an error naming `what`. */
async function readBounded(res: Readable, max: number, what: () => string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res) {
    const b = chunk as Buffer;
    n += b.length;
    if (n > max) {
      res.destroy();
      throw new ShadowError(Code.RegistryUnavailable, `${what()} is larger than ${max} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** The registry's error body, shortened to "CODE message; …" for an error message. */
async function errorDetail(res: IncomingMessage): Promise<string> {
  let body: Buffer;
  try {
    body = await readBounded(res, ERROR_BODY_MAX_BYTES, () => "error body");
  } catch {
    return "";
  }
  let text = body.toString("utf8");
  try {
    const v = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    if (Array.isArray(v.errors)) {
      text = v.errors
        .slice(0, 3)
        .map((e) => [e.code, e.message].filter((x) => typeof x === "string").join(" "))
        .join("; ");
    }
  } catch {
    // not JSON: the text itself
  }
  text = text.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
  return text === "" ? "" : `: ${text.length > 300 ? `${text.slice(0, 300)}…` : text}`;
}

/** Hashes what passes and errors at the end when it is not `expected`. */
function digestChecker(expected: string, what: () => string): Transform {
  const hash = createHash("sha256");
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      const got = `sha256:${hash.digest("hex")}`;
      cb(got === expected ? null : new ShadowError(Code.RegistryUnavailable, `${what()} has digest ${got}, not ${expected} (corrupted or tampered in the registry)`));
    },
  });
}

type Method = "GET" | "HEAD" | "POST" | "PUT" | "DELETE";

interface Call {
  method: Method;
  /** A path on the registry, or an absolute URL (upload locations, redirects). */
  url: string;
  /** Token scope the call needs: `repository:REPO:ACTIONS`, or "" for /v2/. */
  scope: string;
  headers?: OutgoingHttpHeaders;
  /** Called once per attempt (a retry after a token challenge sends the body again). */
  body?: () => NodeJS.ReadableStream | Buffer;
  bodySize?: number;
  /** Whole-call deadline for small exchanges (blob streams have only the idle timeout). */
  deadline?: boolean;
}

interface Token {
  value: string;
  expiresAt: number;
}

export class RegistryClient {
  readonly host: string;
  private readonly base: URL;
  private readonly auth: RegistryAuth | undefined;
  private readonly timeoutMs: number;
  private readonly agent: Agent;
  /** Learned from the first 401: a registry that sends a Bearer challenge gets tokens, not passwords. */
  private scheme: "basic" | "bearer" = "basic";
  private readonly tokens = new Map<string, Token>();

  constructor(endpoint: RegistryEndpoint) {
    assertHost(endpoint.host);
    this.host = endpoint.host;
    this.base = new URL(`https://${endpoint.host}`);
    this.auth = endpoint.auth;
    this.timeoutMs = endpoint.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.agent = new Agent({ keepAlive: true, ...(endpoint.ca !== undefined ? { ca: endpoint.ca } : {}) });
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  /** GET /v2/: throws Unauthenticated ("registry HOST refused the credentials …") or RegistryUnavailable ("registry HOST does not answer: ECONNREFUSED …"). */
  async ping(): Promise<void> {
    const res = await this.send({ method: "GET", url: "/v2/", scope: "", deadline: true });
    if (res.statusCode !== 200) await this.fail(res, "the API version check /v2/");
    res.resume();
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    assertRepository(repo);
    assertDigest(digest);
    const res = await this.send({ method: "HEAD", url: `/v2/${repo}/blobs/${digest}`, scope: `repository:${repo}:pull`, deadline: true });
    res.resume();
    const s = res.statusCode ?? 0;
    if (s === 200 || (s >= 300 && s < 400)) return true;
    if (s === 404) return false;
    return this.fail(res, `blob ${repo}@${digest}`);
  }

  /** Monolithic upload (POST then PUT ?digest=); skips a blob the registry has. */
  async pushBlob(repo: string, digest: string, size: number, body: () => NodeJS.ReadableStream | Buffer): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new ShadowError(Code.InvalidArgument, `invalid blob size ${size}`);
    if (await this.hasBlob(repo, digest)) return;
    const scope = `repository:${repo}:pull,push`;
    const start = await this.send({ method: "POST", url: `/v2/${repo}/blobs/uploads/`, scope, headers: { "content-length": "0" }, deadline: true });
    if (start.statusCode !== 202) await this.fail(start, `an upload to ${repo}`);
    start.resume();
    const location = start.headers.location;
    if (location === undefined) throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} started an upload to ${repo} without a Location`);
    const url = new URL(location, this.base);
    if (url.origin !== this.base.origin && url.protocol !== "https:") {
      throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} sent an upload location that is not https: ${shown(url.origin)}`);
    }
    url.searchParams.set("digest", digest);
    const put = await this.send({
      method: "PUT",
      url: url.href,
      scope,
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      body,
      bodySize: size,
    });
    if (put.statusCode !== 201) await this.fail(put, `blob ${repo}@${digest} (${size} bytes)`);
    put.resume();
  }

  /** The blob as a stream; the digest is checked as it is read (a mismatch errors the stream). */
  async getBlob(repo: string, digest: string): Promise<NodeJS.ReadableStream> {
    assertRepository(repo);
    assertDigest(digest);
    const res = await this.send({ method: "GET", url: `/v2/${repo}/blobs/${digest}`, scope: `repository:${repo}:pull` });
    if (res.statusCode !== 200) await this.fail(res, `blob ${repo}@${digest}`);
    const what = `blob ${repo}@${digest} from registry ${this.host}`;
    const checker = digestChecker(digest, () => what);
    // A connection lost mid-blob is an outage like any other, said as one. Lost after the whole
    // blob arrived (a keep-alive socket reset later) it is nothing: the checker has ended, and an
    // error on it then would reach no listener.
    res.on("error", (err) => {
      if (res.complete || checker.destroyed || checker.writableEnded) return;
      checker.destroy(err instanceof ShadowError ? err : new ShadowError(Code.RegistryUnavailable, `${what} broke off: ${errnoCode(err) ?? err.message}`, { cause: err }));
    });
    checker.on("close", () => {
      if (!res.complete) res.destroy();
    });
    res.pipe(checker);
    return checker;
  }

  async getBlobBuffer(repo: string, digest: string, maxBytes: number): Promise<Buffer> {
    const stream = await this.getBlob(repo, digest);
    return readBounded(stream as Readable, maxBytes, () => `blob ${repo}@${digest} from registry ${this.host}`);
  }

  /** PUT a manifest under a tag or its digest; returns its digest (sha256 of body). */
  async putManifest(repo: string, reference: string, body: Buffer, mediaType: string): Promise<string> {
    assertRepository(repo);
    assertReference(reference);
    if (body.length > MANIFEST_MAX_BYTES) throw new ShadowError(Code.InvalidArgument, `manifest for ${repo} is larger than ${MANIFEST_MAX_BYTES} bytes`);
    if (!ACCEPTED_MANIFESTS.has(mediaType)) throw new ShadowError(Code.InvalidArgument, `unsupported manifest media type ${shown(mediaType)}`);
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    if (isDigest(reference) && reference !== digest) {
      throw new ShadowError(Code.InvalidArgument, `manifest put under ${reference} has digest ${digest}`);
    }
    const res = await this.send({
      method: "PUT",
      url: `/v2/${repo}/manifests/${reference}`,
      scope: `repository:${repo}:pull,push`,
      headers: { "content-type": mediaType, "content-length": String(body.length) },
      body: () => body,
      bodySize: body.length,
      deadline: true,
    });
    if (res.statusCode !== 201) await this.fail(res, `manifest ${repo}:${reference}`);
    res.resume();
    const stored = res.headers["docker-content-digest"];
    if (typeof stored === "string" && stored !== digest) {
      throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} stored manifest ${repo}:${reference} as ${shown(stored)}, not ${digest}`);
    }
    return digest;
  }

  /** Accepts OCI and Docker v2 manifests and indexes; bounded size; the digest is checked. */
  async getManifest(repo: string, reference: string): Promise<{ body: Buffer; mediaType: string; digest: string }> {
    assertRepository(repo);
    assertReference(reference);
    const what = (): string => `manifest ${repo}${isDigest(reference) ? "@" : ":"}${reference} from registry ${this.host}`;
    const res = await this.send({
      method: "GET",
      url: `/v2/${repo}/manifests/${reference}`,
      scope: `repository:${repo}:pull`,
      headers: { accept: [...ACCEPTED_MANIFESTS].join(", ") },
      deadline: true,
    });
    if (res.statusCode !== 200) await this.fail(res, `manifest ${repo}${isDigest(reference) ? "@" : ":"}${reference}`);
    const declared = Number(res.headers["content-length"] ?? 0);
    if (declared > MANIFEST_MAX_BYTES) {
      res.destroy();
      throw new ShadowError(Code.RegistryUnavailable, `${what()} is larger than ${MANIFEST_MAX_BYTES} bytes`);
    }
    const body = await readBounded(res, MANIFEST_MAX_BYTES, what);
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    const expected = isDigest(reference) ? reference : res.headers["docker-content-digest"];
    if (typeof expected === "string" && expected !== digest) {
      throw new ShadowError(Code.RegistryUnavailable, `${what()} has digest ${digest}, not ${shown(expected)} (corrupted or tampered in the registry)`);
    }
    let mediaType = (res.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "";
    if (!ACCEPTED_MANIFESTS.has(mediaType)) {
      try {
        const declaredType = (JSON.parse(body.toString("utf8")) as { mediaType?: unknown }).mediaType;
        if (typeof declaredType === "string") mediaType = declaredType;
      } catch {
        // reported below
      }
    }
    if (!ACCEPTED_MANIFESTS.has(mediaType)) throw new ShadowError(Code.RegistryUnavailable, `${what()} has unsupported media type ${shown(mediaType)}`);
    return { body, mediaType, digest };
  }

  /** Deletes a manifest (and with it the tags naming it); NotFound when it is not there. */
  async deleteManifest(repo: string, digest: string): Promise<void> {
    assertRepository(repo);
    assertDigest(digest);
    const res = await this.send({ method: "DELETE", url: `/v2/${repo}/manifests/${digest}`, scope: `repository:${repo}:delete`, deadline: true });
    if (res.statusCode !== 202 && res.statusCode !== 200) await this.fail(res, `manifest ${repo}@${digest}`);
    res.resume();
  }

  /** Every tag of `repo` (following the registry's pages); [] for a repository it does not know. */
  async listTags(repo: string): Promise<string[]> {
    assertRepository(repo);
    const tags: string[] = [];
    let url: string | undefined = `/v2/${repo}/tags/list?n=1000`;
    for (let page = 0; url !== undefined && page < MAX_TAG_PAGES; page++) {
      const res = await this.send({ method: "GET", url, scope: `repository:${repo}:pull`, deadline: true });
      if (res.statusCode === 404 && page === 0) {
        res.resume();
        return [];
      }
      if (res.statusCode !== 200) await this.fail(res, `the tag list of ${repo}`);
      const body = await readBounded(res, MANIFEST_MAX_BYTES, () => `tag list of ${repo} from registry ${this.host}`);
      let v: unknown;
      try {
        v = JSON.parse(body.toString("utf8"));
      } catch (err) {
        throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} sent a tag list of ${repo} that is not JSON`, { cause: err });
      }
      const listed = (v as { tags?: unknown } | null)?.tags;
      if (Array.isArray(listed)) for (const t of listed) if (typeof t === "string" && TAG_RE.test(t)) tags.push(t);
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(String(res.headers.link ?? ""))?.[1];
      url = next !== undefined && new URL(next, this.base).origin === this.base.origin ? new URL(next, this.base).href : undefined;
    }
    return tags;
  }

  // ---- transport ----

  private who(): string {
    return this.auth === undefined ? "anonymous" : `user ${shown(this.auth.username)}`;
  }

  private basic(): string | undefined {
    return this.auth === undefined ? undefined : `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString("base64")}`;
  }

  private authorization(scope: string): string | undefined {
    if (this.scheme === "basic") return this.basic();
    const t = this.tokens.get(scope);
    if (t === undefined || t.expiresAt <= Date.now()) return undefined;
    return `Bearer ${t.value}`;
  }

  /** One call with its auth: a Bearer challenge fetches a token and retries once; a 401 after that is Unauthenticated. */
  private async send(call: Call): Promise<IncomingMessage> {
    for (let attempt = 0; ; attempt++) {
      let url = new URL(call.url, this.base);
      let res: IncomingMessage;
      for (let hop = 0; ; hop++) {
        const sameOrigin = url.origin === this.base.origin;
        const authz = sameOrigin ? this.authorization(call.scope) : undefined;
        res = await this.exchange(url, call, authz);
        const s = res.statusCode ?? 0;
        const loc = res.headers.location;
        // Blob reads may be redirected to storage (S3 and the like): followed for GET/HEAD, credentials kept home.
        if (!((call.method === "GET" || call.method === "HEAD") && [301, 302, 303, 307, 308].includes(s) && loc !== undefined && call.url.includes("/blobs/"))) break;
        res.resume();
        if (call.method === "HEAD") break;
        if (hop >= MAX_REDIRECTS) throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} redirected ${call.url} more than ${MAX_REDIRECTS} times`);
        url = new URL(loc, url);
        if (url.protocol !== "https:" && !isLoopback(url.hostname)) {
          throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} redirected ${call.url} to a non-https location ${shown(url.origin)}`);
        }
      }
      if (res.statusCode !== 401) return res;
      const challenge = parseBearerChallenge(res.headers["www-authenticate"]);
      const detail = await errorDetail(res);
      if (challenge !== undefined && attempt === 0) {
        this.scheme = "bearer";
        await this.fetchToken(challenge, call.scope);
        continue;
      }
      if (this.auth === undefined) {
        throw new ShadowError(Code.Unauthenticated, `registry ${this.host} requires credentials (HTTP 401${detail}); give a registry auth file`);
      }
      throw new ShadowError(Code.Unauthenticated, `registry ${this.host} refused the credentials of ${this.who()} (HTTP 401${detail}); check the username and password in the registry auth file`);
    }
  }

  /** The token flow (distribution's token auth spec): GET the realm with Basic auth, keep the token per scope. */
  private async fetchToken(challenge: { realm: string; service?: string; scope?: string }, scope: string): Promise<void> {
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch (err) {
      throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} names a token realm that is not a URL: ${shown(challenge.realm)}`, { cause: err });
    }
    if (realm.protocol !== "https:" && !(realm.protocol === "http:" && isLoopback(realm.hostname))) {
      throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} names a token realm that is not https: ${shown(realm.origin)}; credentials are not sent there`);
    }
    if (challenge.service !== undefined) realm.searchParams.set("service", challenge.service);
    const wanted = challenge.scope ?? scope;
    if (wanted !== "") realm.searchParams.set("scope", wanted);
    const res = await this.exchange(realm, { method: "GET", url: realm.href, scope, deadline: true }, this.basic());
    if (res.statusCode === 401 || res.statusCode === 403) {
      const detail = await errorDetail(res);
      throw new ShadowError(Code.Unauthenticated, `the token service ${realm.origin} of registry ${this.host} refused the credentials of ${this.who()} (HTTP ${res.statusCode}${detail})`);
    }
    if (res.statusCode !== 200) {
      const detail = await errorDetail(res);
      throw new ShadowError(Code.RegistryUnavailable, `the token service ${realm.origin} of registry ${this.host} answered HTTP ${res.statusCode}${detail}`);
    }
    const body = await readBounded(res, TOKEN_MAX_BYTES, () => `token from ${realm.origin}`);
    let v: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      v = JSON.parse(body.toString("utf8")) as typeof v;
    } catch (err) {
      throw new ShadowError(Code.RegistryUnavailable, `the token service ${realm.origin} of registry ${this.host} sent no JSON`, { cause: err });
    }
    const token = typeof v.token === "string" && v.token !== "" ? v.token : v.access_token;
    if (typeof token !== "string" || token === "" || !/^[\x21-\x7e]+$/.test(token)) {
      throw new ShadowError(Code.RegistryUnavailable, `the token service ${realm.origin} of registry ${this.host} sent no usable token`);
    }
    const ttl = typeof v.expires_in === "number" && v.expires_in > 0 ? v.expires_in : 60;
    // Renewed a little before the service says it ends.
    const t = { value: token, expiresAt: Date.now() + Math.max(1, ttl - 5) * 1000 };
    this.tokens.set(scope, t);
    if (challenge.scope !== undefined) this.tokens.set(challenge.scope, t);
  }

  /** One HTTP exchange; connection failures and timeouts become RegistryUnavailable naming the host and errno. */
  private exchange(url: URL, call: Call, authorization: string | undefined): Promise<IncomingMessage> {
    const headers: OutgoingHttpHeaders = { ...call.headers, "user-agent": "shadowlayer" };
    if (authorization !== undefined) headers["authorization"] = authorization;
    const target = url.origin === this.base.origin ? `registry ${this.host}` : `${url.origin} (for registry ${this.host})`;
    return new Promise<IncomingMessage>((resolve, reject) => {
      let settled = false;
      let deadline: NodeJS.Timeout | undefined;
      const done = (err: unknown, res?: IncomingMessage): void => {
        if (settled) return;
        settled = true;
        if (deadline !== undefined) clearTimeout(deadline);
        if (res !== undefined) resolve(res);
        else reject(err);
      };
      const opts = { method: call.method, headers, timeout: this.timeoutMs, ...(url.protocol === "https:" ? { agent: this.agent } : {}) };
      const req = (url.protocol === "https:" ? httpsRequest : httpRequest)(url, opts, (res) => {
        if (deadline !== undefined) clearTimeout(deadline);
        done(undefined, res);
      });
      const timedOut = (): void => {
        req.destroy(new ShadowError(Code.RegistryUnavailable, `${target} did not answer ${call.method} ${url.pathname} within ${this.timeoutMs} ms`));
      };
      req.on("timeout", timedOut);
      if (call.deadline === true) deadline = setTimeout(timedOut, this.timeoutMs);
      req.on("error", (err) => {
        if (err instanceof ShadowError) return done(err);
        const code = errnoCode(err) ?? "error";
        if (/CERT|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|ALTNAME/.test(code)) {
          return done(new ShadowError(Code.RegistryUnavailable, `${target} presented a TLS certificate that is not trusted: ${code} (${err.message}); give the CA that signed it`, { cause: err }));
        }
        done(new ShadowError(Code.RegistryUnavailable, `${target} does not answer: ${code} (${err.message})`, { cause: err }));
      });
      const body = call.body?.();
      if (body === undefined) {
        req.end();
      } else if (Buffer.isBuffer(body)) {
        req.end(body);
      } else {
        let sent = 0;
        const counter = new Transform({
          transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
            sent += chunk.length;
            cb(null, chunk);
          },
          flush(cb: TransformCallback) {
            cb(sent === call.bodySize || call.bodySize === undefined ? null : new ShadowError(Code.InvalidArgument, `upload body to ${target} was ${sent} bytes, not the ${call.bodySize} declared`));
          },
        });
        pipeline(body as Readable, counter, req, (err) => {
          // The answer may come before the body is sent (a 401 is sent without reading it).
          if (err != null && !settled) done(err instanceof ShadowError ? err : new ShadowError(Code.InvalidArgument, `cannot send the upload body to ${target}: ${err.message}`, { cause: err }));
        });
      }
    });
  }

  /** Maps a non-success status to the error callers branch on. */
  private async fail(res: IncomingMessage, what: string): Promise<never> {
    const s = res.statusCode ?? 0;
    const detail = await errorDetail(res);
    if (s === 404) throw new ShadowError(Code.NotFound, `registry ${this.host} has no ${what} (HTTP 404${detail})`);
    if (s === 403) throw new ShadowError(Code.PermissionDenied, `registry ${this.host} does not allow ${this.who()} access to ${what} (HTTP 403${detail})`);
    throw new ShadowError(Code.RegistryUnavailable, `registry ${this.host} failed on ${what} (HTTP ${s}${detail})`);
  }
}
