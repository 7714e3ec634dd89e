/**
 * The project's own small PKI for mTLS between agents, the aggregator and CLI clients.
 * ECDSA P-256 (fast to make, supported by Node's TLS). The role sits in the subject's OU: an agent
 * publishes only for the node in its CN, a reader queries, an admin queries and changes policies
 * and feeds, a detector (Falco, falcosidekick) posts alerts to the aggregator's alert intake and
 * nothing else. The aggregator admits each service to the roles `serviceRoles` names.
 */
// @peculiar/x509 resolves its parts through tsyringe, which needs the Reflect metadata API.
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { NODE_NAME } from "./config.js";
import { generateSigningKeys } from "./cosign.js";
import { Code, ShadowError } from "./errors.js";
import { writePrivateFile } from "./private-files.js";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

export type Role = "ca" | "aggregator" | "agent" | "reader" | "admin" | "detector";

/** The roles a client of the aggregator may hold (the CLI holds one file pair per role). */
export type ClientRole = "reader" | "admin";

/**
 * The OU of the one CLI certificate an older `certs init` made, when every client was an admin.
 * The aggregator now admits it as a reader only: nobody chose to make it an admin.
 */
export const LEGACY_CLIENT_ROLE = "client";

/**
 * Which roles each service admits, least privileged first: the aggregator enforces it at the
 * gRPC edge, and the CLI presents the first. Keyed by the service's full protobuf name.
 */
export const serviceRoles: Readonly<Record<string, readonly Role[]>> = {
  "shadowlayer.v1.AgentService": ["agent"],
  "shadowlayer.v1.QueryService": ["reader", "admin"],
  "shadowlayer.v1.AdminService": ["admin"],
};

/** The name every aggregator certificate carries, used when clients dial an IP address. */
export const AGGREGATOR_TLS_NAME = "shadowlayer-aggregator";

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const YEAR_MS = 365 * 24 * 3600 * 1000;

/** File names inside a TLS directory, in one place. */
export const tlsFiles = {
  caCert: "ca.crt",
  caKey: "ca.key",
  aggregatorCert: "aggregator.crt",
  aggregatorKey: "aggregator.key",
  agentCert: (node: string) => `agent-${node}.crt`,
  agentKey: (node: string) => `agent-${node}.key`,
  roleCert: (role: ClientRole) => `${role}.crt`,
  roleKey: (role: ClientRole) => `${role}.key`,
  /** An external detector's pair (Falco's http_output, falcosidekick): made only when asked for. */
  detectorCert: "detector.crt",
  detectorKey: "detector.key",
  /** The pre-roles CLI pair: never written any more, reported when found. */
  legacyClientCert: "client.crt",
  /** The aggregator's image-signing key pair (cosign layout: ECDSA P-256, PEM); agents hold the public half. */
  signingKey: "cosign.key",
  signingPub: "cosign.pub",
};

/** PEM material for one side of a TLS connection. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface InitCertsOptions {
  /** Node names to make agent certificates for. */
  nodes: string[];
  /** Extra DNS names or IPs for the aggregator certificate (localhost and loopback are always in). */
  sans?: string[];
  /** Also a detector pair, for an external detector posting alerts over mTLS. */
  detector?: boolean;
}

export interface InitCertsResult {
  dir: string;
  created: string[];
  kept: string[];
  /** Files from an older layout that the CLI no longer uses (the read-only `client` pair). */
  obsolete: string[];
}


/** Checks a node name before it becomes a file name and a certificate CN. */
export function assertNodeName(node: string): void {
  if (!NODE_NAME.test(node)) {
    throw new ShadowError(
      Code.InvalidArgument,
      `invalid node name ${JSON.stringify(node)}: use letters, digits, '.', '_' or '-' (at most 253)`,
    );
  }
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as CryptoKeyPair;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decode(pem)[0];
  if (der === undefined) throw new ShadowError(Code.InvalidArgument, "CA key file holds no PEM block");
  return webcrypto.subtle.importKey("pkcs8", der, ALG, true, ["sign"]);
}

function serial(): string {
  // Positive, 16 bytes.
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] ?? 0) & 0x7f;
  return Buffer.from(b).toString("hex");
}

function sanEntries(names: string[]): x509.JsonGeneralName[] {
  return names.map((n) => ({ type: /^[\d.]+$|:/.test(n) ? "ip" : "dns", value: n }));
}

interface Issued {
  cert: string;
  key: string;
}

async function issue(
  ca: { cert: x509.X509Certificate; key: CryptoKey },
  role: Exclude<Role, "ca">,
  cn: string,
  sans: string[],
): Promise<Issued> {
  const keys = await newKeys();
  const usages =
    role === "aggregator"
      ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
      : [x509.ExtendedKeyUsage.clientAuth];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${cn}, OU=${role}, O=shadowlayer`,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 2 * YEAR_MS),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension(usages),
      ...(sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(sanEntries(sans))] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: await keyPem(keys.privateKey) };
}

/**
 * Makes (or completes) a TLS directory: a CA, the aggregator's certificate, one per agent node,
 * a reader and an admin certificate for the CLI, and a detector's when asked for. Existing files are kept, so adding a node later
 * reuses the same CA, and a directory from before roles gains the reader and admin pairs.
 */
export async function initCerts(dir: string, opts: InitCertsOptions): Promise<InitCertsResult> {
  for (const n of opts.nodes) assertNodeName(n);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const created: string[] = [];
  const kept: string[] = [];
  const p = (f: string) => join(dir, f);

  let ca: { cert: x509.X509Certificate; key: CryptoKey };
  if (existsSync(p(tlsFiles.caCert)) && existsSync(p(tlsFiles.caKey))) {
    ca = {
      cert: new x509.X509Certificate(await readFile(p(tlsFiles.caCert), "utf8")),
      key: await importKey(await readFile(p(tlsFiles.caKey), "utf8")),
    };
    kept.push(tlsFiles.caCert);
  } else {
    const keys = await newKeys();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=shadowlayer CA ${serial().slice(0, 8)}, OU=ca, O=shadowlayer`,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 10 * YEAR_MS),
      signingAlgorithm: ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    await writeFile(p(tlsFiles.caCert), cert.toString("pem"));
    await writePrivateFile(p(tlsFiles.caKey), await keyPem(keys.privateKey));
    ca = { cert, key: keys.privateKey };
    created.push(tlsFiles.caCert);
  }

  const want: Array<{ role: Exclude<Role, "ca">; cn: string; certFile: string; keyFile: string; sans: string[] }> = [
    {
      role: "aggregator",
      cn: "shadowlayer-aggregator",
      certFile: tlsFiles.aggregatorCert,
      keyFile: tlsFiles.aggregatorKey,
      sans: [
        "localhost",
        "127.0.0.1",
        "::1",
        "shadowlayer-aggregator",
        "shadowlayer-aggregator.shadowlayer",
        "shadowlayer-aggregator.shadowlayer.svc",
        ...(opts.sans ?? []),
      ],
    },
    ...(["reader", "admin"] as const).map((role) => ({ role, cn: `shadowlayer-${role}`, certFile: tlsFiles.roleCert(role), keyFile: tlsFiles.roleKey(role), sans: [] })),
    ...(opts.detector === true ? [{ role: "detector" as const, cn: "shadowlayer-detector", certFile: tlsFiles.detectorCert, keyFile: tlsFiles.detectorKey, sans: [] }] : []),
    ...opts.nodes.map((node) => ({
      role: "agent" as const,
      cn: node,
      certFile: tlsFiles.agentCert(node),
      keyFile: tlsFiles.agentKey(node),
      sans: [],
    })),
  ];
  for (const w of want) {
    if (existsSync(p(w.certFile)) && existsSync(p(w.keyFile))) {
      kept.push(w.certFile);
      continue;
    }
    const got = await issue(ca, w.role, w.cn, w.sans);
    await writeFile(p(w.certFile), got.cert);
    await writePrivateFile(p(w.keyFile), got.key);
    created.push(w.certFile);
  }
  if (existsSync(p(tlsFiles.signingKey)) && existsSync(p(tlsFiles.signingPub))) kept.push(tlsFiles.signingPub);
  else {
    const k = generateSigningKeys();
    await writePrivateFile(p(tlsFiles.signingKey), k.privateKeyPem);
    await writeFile(p(tlsFiles.signingPub), k.publicKeyPem);
    created.push(tlsFiles.signingPub);
  }
  const obsolete = existsSync(p(tlsFiles.legacyClientCert)) ? [tlsFiles.legacyClientCert] : [];
  return { dir, created, kept, obsolete };
}

const FIRST_RUN = "run `shadowlayer certs init` first, or pass --insecure to run without TLS (not for production)";

/** What each client pair is for, said when it is missing; a directory from before roles lacks both. */
const clientPurpose: Record<ClientRole, string> = {
  reader: "read commands need the reader certificate",
  admin: "admin commands (policy, feeds --refresh) need the admin certificate",
};

async function readOrExplain(path: string, hint: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ShadowError(Code.FailedPrecondition, `cannot read ${path}: ${hint}`, { cause: err });
  }
}

/** Loads the files one program needs from a TLS directory. */
export async function loadTls(dir: string, who: { role: "aggregator" | ClientRole } | { role: "agent"; node: string }): Promise<TlsMaterial> {
  const [certFile, keyFile] =
    who.role === "agent"
      ? [tlsFiles.agentCert(who.node), tlsFiles.agentKey(who.node)]
      : who.role === "aggregator"
        ? [tlsFiles.aggregatorCert, tlsFiles.aggregatorKey]
        : [tlsFiles.roleCert(who.role), tlsFiles.roleKey(who.role)];
  const pairHint =
    who.role === "reader" || who.role === "admin"
      ? `${clientPurpose[who.role]}; run \`shadowlayer certs init\` (it keeps the CA and every file already there and adds what is missing), or copy ${certFile} and ${keyFile} from where it was made`
      : FIRST_RUN;
  return {
    ca: await readOrExplain(join(dir, tlsFiles.caCert), FIRST_RUN),
    cert: await readOrExplain(join(dir, certFile), pairHint),
    key: await readOrExplain(join(dir, keyFile), pairHint),
  };
}

/** Reads role (OU) and name (CN) from a peer certificate's subject as Node's TLS reports it. */
export function peerIdentity(subject: { CN?: string | string[]; OU?: string | string[] } | undefined): {
  role: string;
  name: string;
} | undefined {
  if (subject === undefined) return undefined;
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const name = first(subject.CN);
  const role = first(subject.OU);
  if (name === undefined || role === undefined) return undefined;
  return { role, name };
}
