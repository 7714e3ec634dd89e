/**
 * The Falco intake: an HTTP(S) endpoint that takes alerts exactly as Falco's `http_output` and
 * falcosidekick's `webhook` post them, and asks the control for a switchover of the container an
 * alert names. Each request ends with a status and a JSON answer saying why (`outcome`,
 * `message`, `field` when the body is at fault, `switchover_id` when a switchover was asked
 * for), and is counted by outcome; a refused alert switches nothing. Everything a request
 * carries is bounded before it is read, and reaches the log only cut and escaped.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { TLSSocket } from "node:tls";
import type { Registry } from "prom-client";
import { SwitchoverOutcome, SwitchoverTrigger, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import type { TlsMaterial } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import { dialAddress, refuseInsecureListen, splitHostPort } from "../../common/listen-address.js";
import type { Logger } from "../../common/log.js";
import type { SwitchoverRequester } from "./types.js";
import { parseFalcoAlert, type FalcoAlert, type FalcoPriority } from "./falco-alert.js";
import { clientCertVerdict, FALCO_CLIENT_ROLES, presentedToken, readTokenFile, tokenMatcher } from "./falco-auth.js";
import { DEFAULT_MIN_PRIORITY, falcoFilter } from "./falco-filter.js";
import { FalcoIntakeMetrics, type FalcoOutcome } from "./falco-metrics.js";

export const DEFAULT_FALCO_PATH = "/v1/falco";
/** Falco alerts are a few KiB; 64 KiB leaves room for long command lines and many fields. */
export const DEFAULT_FALCO_MAX_BODY = 64 * 1024;
/**
 * Falco's output thread waits for each POST and reports its outputs blocked past `output_timeout`
 * (2 s by default): the intake answers by then, and a switchover the control has not taken yet
 * goes on (its outcome is counted and logged when it comes).
 */
export const DEFAULT_FALCO_ANSWER_MS = 1500;

/** The intake's settings, as the aggregator's configuration makes them (`--falco-*`). */
export interface FalcoIntakeOptions {
  /** host:port; port 0 picks a free one. Without TLS, loopback only. */
  listen: string;
  /** A file holding the token, taken as `Authorization: Bearer <token>` or as the Basic password. */
  tokenFile?: string;
  /** Admit client certificates of the shadowlayer CA with a detector or admin role (needs TLS). */
  mtls?: boolean;
  /** Rule names or `/regex/flags`; empty: every rule. */
  rules?: string[];
  /** Alerts below it are answered and counted, not switched (default warning). */
  minPriority?: FalcoPriority;
  /** Where alerts are posted (default /v1/falco); `/` is taken too, falcosidekick's usual webhook address. */
  path?: string;
  maxBodyBytes?: number;
  answerWithinMs?: number;
  /** No shadow ready: rebuild on demand and wait (default true; the seed's rule). */
  rebuildIfMissing?: boolean;
}

export interface FalcoIntakeDeps {
  requester: SwitchoverRequester;
  /** The aggregator's own: its certificate serves the intake, its CA checks client certificates. */
  tls: TlsMaterial | "insecure";
  log: Logger;
  /** Whether a container id is known; without it the requester's NotFound says so. */
  resolve?: (containerId: string) => boolean;
  /** Where the intake's counter is registered (the aggregator's /metrics); its own otherwise. */
  registry?: Registry;
}

export interface FalcoIntake {
  port: number;
  /** Where to point Falco's http_output or falcosidekick's webhook, as reached from this host. */
  url: string;
  registry: Registry;
  /** Requests by outcome since start. */
  stats(): Record<FalcoOutcome, number>;
  close(): Promise<void>;
}

/** Past the bound, a refused request's body is still read (so that its sender sees the answer) up to this much more. */
const DRAIN_BYTES = 1024 * 1024;
/** The longest reason handed to the control (it keeps it with the record). */
const MAX_REASON = 1000;
/** How much of a sender's text a log line shows. */
const LOG_CUT = 160;
/** A refusal of one kind is logged at most once per window; the next line counts those left out. */
const LOG_WINDOW_MS = 10_000;

/** Cut to `max` characters and every control or bidi character written out: safe for logs and records. */
function clip(s: string, max: number): string {
  const cut = s.length > max ? `${s.slice(0, max)}… (${s.length} characters)` : s;
  return cut.replace(/[\p{Cc}\p{Bidi_Control}]/gu, (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, "0")}`);
}

/** The reason kept with the switchover record: rule, priority, when, where and Falco's output line. */
function reasonOf(a: FalcoAlert): string {
  const where = a.hostname !== undefined ? ` on ${a.hostname}` : "";
  const text = `Falco rule "${a.rule}" (${a.priority}) at ${a.time.toISOString()}${where}: ${a.output ?? "(no output line)"}`;
  return clip(text, MAX_REASON);
}

interface Answer {
  status: number;
  outcome: FalcoOutcome | "pending";
  message: string;
  extra?: Record<string, string>;
  headers?: Record<string, string>;
}

export async function startFalcoIntake(o: FalcoIntakeOptions, deps: FalcoIntakeDeps): Promise<FalcoIntake> {
  const log = deps.log.child({ component: "falco-intake" });
  const intakePath = o.path ?? DEFAULT_FALCO_PATH;
  const maxBody = o.maxBodyBytes ?? DEFAULT_FALCO_MAX_BODY;
  const answerMs = o.answerWithinMs ?? DEFAULT_FALCO_ANSWER_MS;
  const minPriority = o.minPriority ?? DEFAULT_MIN_PRIORITY;
  const mtls = o.mtls === true;
  const insecure = deps.tls === "insecure";
  if (insecure) refuseInsecureListen(o.listen, "--falco-listen");
  if (mtls && insecure) throw new ShadowError(Code.InvalidArgument, "--falco-mtls: client certificates need TLS (not --insecure)");
  if (o.tokenFile === undefined && !mtls) throw new ShadowError(Code.InvalidArgument, "--falco-listen: the intake needs --falco-token-file or --falco-mtls; it admits no anonymous alert");
  const token = o.tokenFile === undefined ? undefined : tokenMatcher(await readTokenFile(o.tokenFile));
  const judge = falcoFilter(o.rules ?? [], minPriority);
  const metrics = new FalcoIntakeMetrics(deps.registry);

  const quiet = new Map<string, { until: number; left: number }>();
  /** Logs an outcome: every switchover asked for, each other kind at most once per window. */
  const note = (outcome: string, fields: Record<string, unknown>, msg: string) => {
    const asked = outcome === "accepted" || outcome === "pending";
    const now = Date.now();
    const q = quiet.get(outcome);
    if (!asked && q !== undefined && now < q.until) {
      q.left++;
      return;
    }
    if (!asked) quiet.set(outcome, { until: now + LOG_WINDOW_MS, left: 0 });
    const left = q?.left ?? 0;
    const level = asked || outcome.startsWith("filtered") ? "info" : "warn";
    log[level]({ outcome, ...fields, ...(left > 0 ? { notLogged: left } : {}) }, msg);
  };

  /** Reads and drops what the sender still sends after an early answer, up to a bound, then cuts it off. */
  const drain = (req: IncomingMessage, already: number) => {
    let n = already;
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > maxBody + DRAIN_BYTES) req.socket.destroy();
    });
    req.resume();
  };

  const authenticate = (req: IncomingMessage): { ok: true; who: string } | { ok: false; status: 401 | 403; why: string } => {
    let certRefusal: { status: 401 | 403; why: string } | undefined;
    if (mtls && req.socket instanceof TLSSocket) {
      const v = clientCertVerdict(req.socket);
      if (v.ok) return { ok: true, who: `${v.role} certificate CN=${v.name}` };
      if (v.present) certRefusal = v;
    }
    if (token !== undefined) {
      const t = presentedToken(req.headers.authorization);
      if (t !== undefined) return token(t) ? { ok: true, who: "token" } : { ok: false, status: 401, why: "the token does not match" };
    }
    if (certRefusal !== undefined) return { ok: false, ...certRefusal };
    const ways = [token !== undefined ? "a Bearer token (or the Basic password)" : "", mtls ? `a client certificate of the shadowlayer CA (${FALCO_CLIENT_ROLES.join(" or ")})` : ""].filter((w) => w !== "");
    return { ok: false, status: 401, why: `${ways.join(" or ")} is required` };
  };

  /** The control's answer to a switchover ask, as the intake says it. */
  const settled = (alert: FalcoAlert, r: { record: SwitchoverRecord } | { err: unknown }): Answer & { outcome: FalcoOutcome } => {
    const c = alert.containerId;
    if ("record" in r) {
      const state = SwitchoverOutcome[r.record.outcome]?.toLowerCase() ?? "unknown";
      const waiting = r.record.waitingForJob !== "" ? `, waiting for rebuild ${r.record.waitingForJob}` : "";
      return { status: 202, outcome: "accepted", message: `switchover ${r.record.id} of container ${c} requested: ${state}${waiting}`, extra: { switchover_id: r.record.id, container: c, state } };
    }
    const e = ShadowError.from(r.err);
    const why = clip(e.message, 300);
    if (e.code === Code.NotFound) return { status: 404, outcome: "unknown_container", message: `no known container ${c}: ${why}`, extra: { container: c } };
    if (e.code === Code.FailedPrecondition) return { status: 409, outcome: "conflict", message: `container ${c} is not switched now: ${why}`, extra: { container: c } };
    return { status: 503, outcome: "unavailable", message: `the switchover could not be asked for: ${why}`, extra: { container: c } };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, expectContinue: boolean): Promise<void> => {
    const peer = req.socket.remoteAddress ?? "";
    let bodyRead = false;
    const reply = (a: Answer, fields: Record<string, unknown> = {}) => {
      if (a.outcome !== "pending") metrics.count(a.outcome);
      note(a.outcome, { peer, status: a.status, ...fields }, a.message);
      if (!bodyRead) {
        // A sender told to wait for 100-continue has sent no body: close rather than guess.
        if (expectContinue) res.setHeader("connection", "close");
        else drain(req, 0);
      }
      const body = `${JSON.stringify({ outcome: a.outcome, message: a.message, ...a.extra })}\n`;
      res.writeHead(a.status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...a.headers });
      res.end(body);
    };

    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (path !== intakePath && path !== "/") return reply({ status: 404, outcome: "wrong_path", message: `no intake here; Falco alerts are posted to ${intakePath}` }, { path: clip(path, LOG_CUT) });
    if (req.method !== "POST") return reply({ status: 405, outcome: "wrong_method", message: "alerts are POSTed (falcosidekick: webhook.method POST)", headers: { allow: "POST" } }, { method: clip(req.method ?? "", 16) });
    const auth = authenticate(req);
    if (!auth.ok) {
      const challenge: Record<string, string> = auth.status === 401 && token !== undefined ? { "www-authenticate": 'Bearer realm="shadowlayer-falco"' } : {};
      return reply({ status: auth.status, outcome: auth.status === 401 ? "unauthenticated" : "forbidden", message: auth.why, headers: challenge });
    }
    const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
    if (type !== "application/json") {
      return reply({ status: 415, outcome: "unsupported_media_type", message: `expected Content-Type application/json (Falco: json_output true), got ${JSON.stringify(clip(req.headers["content-type"] ?? "nothing", 60))}` });
    }
    const encoding = req.headers["content-encoding"]?.trim().toLowerCase();
    if (encoding !== undefined && encoding !== "" && encoding !== "identity") {
      return reply({ status: 415, outcome: "unsupported_media_type", message: `compressed bodies are not taken (Content-Encoding ${JSON.stringify(clip(encoding, 30))})` });
    }
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > maxBody) return reply({ status: 413, outcome: "oversized", message: `the body is ${declared} bytes; at most ${maxBody} are taken` });
    if (expectContinue) res.writeContinue();

    const body = await readBounded(req, maxBody);
    bodyRead = true;
    if (body === "aborted") return;
    if (body === "oversized") {
      drain(req, maxBody + 1);
      return reply({ status: 413, outcome: "oversized", message: `the body is over ${maxBody} bytes` });
    }
    let value: unknown;
    try {
      value = JSON.parse(body.toString("utf8"));
    } catch (err) {
      return reply({ status: 400, outcome: "malformed", message: `body: not JSON (${clip(err instanceof Error ? err.message : String(err), 120)})`, extra: { field: "body" } });
    }
    const parsed = parseFalcoAlert(value);
    if ("problem" in parsed) {
      const p = parsed.problem;
      return reply({ status: 400, outcome: "malformed", message: `${p.field}: ${p.message}`, extra: { field: p.field } }, { field: p.field });
    }
    const alert = parsed.alert;
    const about = { container: alert.containerId, rule: clip(alert.rule, LOG_CUT), priority: alert.priority, ...(alert.uuid !== undefined ? { uuid: clip(alert.uuid, 64) } : {}), by: auth.who };
    const verdict = judge(alert);
    if (!verdict.pass) return reply({ status: 202, outcome: verdict.reason, message: `not switched: ${verdict.why}`, extra: { container: alert.containerId } }, about);
    if (deps.resolve !== undefined && !deps.resolve(alert.containerId)) {
      return reply({ status: 404, outcome: "unknown_container", message: `no known container ${alert.containerId}`, extra: { container: alert.containerId } }, about);
    }

    const ask = { container: alert.containerId, trigger: SwitchoverTrigger.FALCO, reason: reasonOf(alert), rebuildIfMissing: o.rebuildIfMissing ?? true };
    const asked = Promise.resolve()
      .then(() => deps.requester.switchover(ask))
      .then(
        (record) => ({ record }),
        (err: unknown) => ({ err }),
      );
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), answerMs);
    });
    const first = await Promise.race([asked, late]);
    clearTimeout(timer);
    if (first !== undefined) return reply(settled(alert, first), about);
    reply({ status: 202, outcome: "pending", message: `switchover of container ${alert.containerId} requested; the control has not answered within ${answerMs} ms (it goes on)`, extra: { container: alert.containerId } }, about);
    const a = settled(alert, await asked);
    metrics.count(a.outcome);
    note(a.outcome, { ...about, late: true }, a.message);
  };

  const onRequest = (expectContinue: boolean) => (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res, expectContinue).catch((err: unknown) => {
      log.error({ err: clip(err instanceof Error ? err.message : String(err), 300) }, "falco intake: request failed");
      if (!res.headersSent) {
        metrics.count("unavailable");
        res.writeHead(500, { "content-type": "application/json", connection: "close" });
        res.end(`${JSON.stringify({ outcome: "unavailable", message: "internal error" })}\n`);
      } else res.destroy();
    });
  };

  const tls = deps.tls;
  const server: Server =
    tls === "insecure"
      ? createHttpServer({ requestTimeout: 30_000, headersTimeout: 10_000 })
      : createHttpsServer({
          requestTimeout: 30_000,
          headersTimeout: 10_000,
          ca: tls.ca,
          cert: tls.cert,
          key: tls.key,
          // Asked for, not required: a refused certificate gets an answer that says why, and is counted.
          requestCert: mtls,
          rejectUnauthorized: false,
          minVersion: "TLSv1.2",
        });
  server.on("request", onRequest(false));
  server.on("checkContinue", onRequest(true));
  server.maxConnections = 256;
  const { host, port } = splitHostPort(o.listen);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  const url = `${insecure ? "http" : "https"}://${dialAddress(o.listen, bound)}${intakePath}`;
  log.info({ listen: o.listen, port: bound, tls: !insecure, mtls, token: token !== undefined, rules: (o.rules ?? []).length, minPriority }, "falco intake listening");
  return {
    port: bound,
    url,
    registry: metrics.registry,
    stats: () => metrics.snapshot(),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The body, or "oversized" as soon as it passes `max` (the rest is not kept), or "aborted". */
function readBounded(req: IncomingMessage, max: number): Promise<Buffer | "oversized" | "aborted"> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const done = (v: Buffer | "oversized" | "aborted") => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
      resolve(v);
    };
    const onData = (c: Buffer) => {
      n += c.length;
      if (n > max) done("oversized");
      else chunks.push(c);
    };
    const onEnd = () => done(Buffer.concat(chunks));
    const onClose = () => done("aborted");
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("close", onClose);
  });
}
