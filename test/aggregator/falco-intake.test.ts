/**
 * The Falco intake over real HTTPS on loopback: alerts in the shape Falco's http_output
 * (json_output: true) and falcosidekick's webhook post them, with a token or a client
 * certificate, reach a recording SwitchoverRequester test double as FALCO switchovers of the
 * container they name; every refusal (unauthenticated, forbidden, malformed, oversized, filtered,
 * unknown container, a switchover already running) is answered with its reason, counted in the
 * stats and on /metrics, and asks for nothing.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest, type RequestOptions } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { SwitchoverOutcome, SwitchoverRecordSchema, SwitchoverTrigger, type SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";
import { startFalcoIntake, type FalcoIntake } from "../../aggregator/index.js";
import type { FalcoOutcome } from "../../aggregator/control/falco-metrics.js";
import type { RollbackAsk, SwitchoverAsk, SwitchoverRequester } from "../../aggregator/control/types.js";
import { initCerts, loadTls, tlsFiles, type TlsMaterial } from "../../common/certs.js";
import { Code, ShadowError } from "../../common/errors.js";
import { startHttpEndpoint, type HttpEndpoint } from "../../common/http-endpoint.js";
import { silentLogger } from "../../common/log.js";

/** Records every ask; answers per container as a test sets it (a RUNNING record by default). */
class RecordingSwitchoverRequester implements SwitchoverRequester {
  readonly asks: SwitchoverAsk[] = [];
  readonly answers = new Map<string, (ask: SwitchoverAsk) => Promise<SwitchoverRecord>>();
  private n = 0;

  switchover(ask: SwitchoverAsk): Promise<SwitchoverRecord> {
    this.asks.push(ask);
    const answer = this.answers.get(ask.container);
    if (answer !== undefined) return answer(ask);
    this.n++;
    return Promise.resolve(create(SwitchoverRecordSchema, { id: `sw-${this.n}`, containerId: ask.container, trigger: ask.trigger, reason: ask.reason, outcome: SwitchoverOutcome.RUNNING }));
  }

  rollback(_ask: RollbackAsk): Promise<SwitchoverRecord> {
    return Promise.reject(new ShadowError(Code.Unimplemented, "the intake never rolls back"));
  }
}

const CONTAINER = "3a1b2c3d4e5f";

/**
 * An alert of Falco's stock "Drop and execute new binary in container" rule (Critical) in the
 * shape Falco's JSON formatter writes it: time with nanoseconds, rule, priority as Falco spells
 * it, source, hostname, output, tags, and output_fields holding the fields the rule's output
 * names (null for one Falco could not resolve).
 */
function falcoAlert(over: Record<string, unknown> = {}, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: "node-a",
    output:
      "10:20:05.408091526: Critical Executing binary not part of base image (proc_exe=/tmp/x proc_sname=bash gparent=containerd-shim evt_type=execve user=root user_uid=0 user_loginuid=-1 process=x proc_exepath=/tmp/x parent=bash command=x -c id terminal=34816 exe_flags=EXE_UPPER_LAYER container_id=3a1b2c3d4e5f container_name=web)",
    output_fields: {
      "container.id": CONTAINER,
      "container.name": "web",
      "evt.arg.flags": "EXE_UPPER_LAYER",
      "evt.time": 1714558805408091526,
      "evt.type": "execve",
      "proc.cmdline": "x -c id",
      "proc.exe": "/tmp/x",
      "proc.exepath": "/tmp/x",
      "proc.name": "x",
      "proc.pname": "bash",
      "proc.tty": 34816,
      "user.loginuid": -1,
      "user.name": "root",
      "user.uid": 0,
      "k8s.pod.name": null,
      ...fields,
    },
    priority: "Critical",
    rule: "Drop and execute new binary in container",
    source: "syscall",
    tags: ["TA0003", "container", "maturity_stable", "mitre_persistence", "process"],
    time: "2024-05-01T10:20:05.408091526Z",
    ...over,
  };
}

/** falcosidekick's webhook body: Falco's payload re-encoded by Go, a uuid added, the time in RFC 3339. */
function sidekickAlert(): Record<string, unknown> {
  return falcoAlert({ uuid: "0d0e6f1c-7e0b-4a1d-9c51-0e7f1f4e2b11", priority: "critical", time: "2024-05-01T10:20:05.408091526+00:00" });
}

interface Reply {
  status: number;
  body: { outcome: string; message: string; field?: string; switchover_id?: string; container?: string; state?: string };
  headers: Record<string, string | string[] | undefined>;
}

describe("Falco intake", () => {
  let dir: string;
  let tlsDir: string;
  let serverTls: TlsMaterial;
  let token: string;
  let tokenFile: string;
  let requester: RecordingSwitchoverRequester;
  let intake: FalcoIntake;
  let metricsEndpoint: HttpEndpoint;

  const pair = async (d: string, cert: string, key: string) => ({ cert: await readFile(join(d, cert)), key: await readFile(join(d, key)) });

  /** One request over HTTPS to the intake; `as` is a client certificate, `auth` an Authorization header. */
  const post = (body: string | Buffer, o: { auth?: string; as?: { cert: Buffer; key: Buffer }; type?: string; path?: string; method?: string; headers?: Record<string, string>; chunked?: boolean; expectContinue?: boolean } = {}): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { "content-type": o.type ?? "application/json", "user-agent": "falcosecurity/falco", ...o.headers };
      if (o.auth !== undefined) headers["authorization"] = o.auth;
      if (o.chunked !== true) headers["content-length"] = Buffer.byteLength(body);
      if (o.expectContinue === true) headers["expect"] = "100-continue";
      const options: RequestOptions = { host: "127.0.0.1", port: intake.port, path: o.path ?? "/v1/falco", method: o.method ?? "POST", headers, ca: serverTls.ca, ...(o.as ?? {}) };
      const req = httpsRequest(options, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Reply["body"], headers: res.headers });
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      });
      req.on("error", reject);
      if (o.expectContinue === true) {
        req.on("continue", () => req.end(body));
        return;
      }
      if (o.chunked === true) {
        // Sent in pieces with no declared length, the way a streaming client would.
        const b = Buffer.from(body);
        for (let i = 0; i < b.length; i += 16 * 1024) req.write(b.subarray(i, i + 16 * 1024));
        req.end();
      } else req.end(body);
    });

  const bearer = () => `Bearer ${token}`;
  /** What libcurl sends for Falco's http_output with the token in the url (https://falco:TOKEN@host/...). */
  const basic = (password: string) => `Basic ${Buffer.from(`falco:${password}`).toString("base64")}`;

  /** Runs `fn` and returns how each outcome's count moved. */
  const counted = async (fn: () => Promise<void>): Promise<Partial<Record<FalcoOutcome, number>>> => {
    const before = intake.stats();
    await fn();
    const now = intake.stats();
    const moved: Partial<Record<FalcoOutcome, number>> = {};
    for (const [k, v] of Object.entries(now) as Array<[FalcoOutcome, number]>) if (v !== before[k]) moved[k] = v - before[k];
    return moved;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-falco-"));
    tlsDir = join(dir, "tls");
    await initCerts(tlsDir, { nodes: ["node-a"], detector: true });
    serverTls = await loadTls(tlsDir, { role: "aggregator" });
    token = randomBytes(24).toString("hex");
    tokenFile = join(dir, "falco.token");
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    requester = new RecordingSwitchoverRequester();
    const log = silentLogger();
    intake = await startFalcoIntake(
      { listen: "127.0.0.1:0", tokenFile, mtls: true, rules: ["Drop and execute new binary in container", "/^Terminal shell/", "/^Netcat Remote Code Execution/"], minPriority: "warning", answerWithinMs: 300 },
      { requester, tls: serverTls, log },
    );
    metricsEndpoint = await startHttpEndpoint("127.0.0.1:0", [intake.registry], () => ({ ok: true, detail: "" }));
  });
  after(async () => {
    await intake.close();
    await metricsEndpoint.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("switches the container a Falco http_output alert names (token as the Basic password), with the rule and output as the reason", async () => {
    requester.asks.length = 0;
    let r: Reply | undefined;
    const moved = await counted(async () => {
      r = await post(JSON.stringify(falcoAlert()), { auth: basic(token) });
    });
    assert.equal(r?.status, 202, JSON.stringify(r?.body));
    assert.equal(r?.body.outcome, "accepted");
    assert.match(r?.body.switchover_id ?? "", /^sw-\d+$/);
    assert.equal(r?.body.container, CONTAINER);
    assert.equal(requester.asks.length, 1);
    const ask = requester.asks[0];
    assert.equal(ask?.container, CONTAINER);
    assert.equal(ask?.trigger, SwitchoverTrigger.FALCO);
    assert.match(ask?.reason ?? "", /^Falco rule "Drop and execute new binary in container" \(critical\) at 2024-05-01T10:20:05\.408Z on node-a: 10:20:05\.408091526: Critical Executing binary not part of base image/);
    assert.match(ask?.reason ?? "", /container_id=3a1b2c3d4e5f/);
    assert.equal(ask?.rebuildIfMissing, true, "no shadow ready: rebuilt on demand (the seed's rule)");
    assert.deepEqual(moved, { accepted: 1 });
  });

  it("takes what libcurl sends as Falco's http_output drives it: the url's credentials as Basic auth, 100-continue, a client certificate", async () => {
    requester.asks.length = 0;
    const alertFile = join(dir, "alert.json");
    await writeFile(alertFile, JSON.stringify(falcoAlert()));
    const caFile = join(tlsDir, tlsFiles.caCert);
    /** curl with Falco's options: its url, Content-Type: application/json, the alert as POSTFIELDS, the CA; status last. */
    const curl = async (url: string, ...extra: string[]) => {
      const { stdout } = await promisify(execFile)("curl", ["-sS", "--cacert", caFile, "-H", "Content-Type: application/json", "-A", "falcosecurity/falco", "--data-binary", `@${alertFile}`, "-w", "\n%{http_code}", ...extra, url]);
      const lines = stdout.trimEnd().split("\n");
      return { status: Number(lines.pop()), body: JSON.parse(lines.join("\n")) as Reply["body"] };
    };
    const withToken = await curl(`https://falco:${token}@127.0.0.1:${intake.port}/v1/falco`);
    assert.equal(withToken.status, 202, JSON.stringify(withToken.body));
    assert.equal(withToken.body.outcome, "accepted");
    const wrong = await curl(`https://falco:not-the-token-at-all@127.0.0.1:${intake.port}/v1/falco`);
    assert.equal(wrong.status, 401);
    const cert = await curl(`https://127.0.0.1:${intake.port}/v1/falco`, "--cert", join(tlsDir, tlsFiles.detectorCert), "--key", join(tlsDir, tlsFiles.detectorKey));
    assert.equal(cert.status, 202, JSON.stringify(cert.body));
    assert.equal(requester.asks.length, 2);
  });

  it("takes falcosidekick's webhook body (uuid, lower-case priority, charset, Bearer token from customHeaders) at a bare address (path /)", async () => {
    requester.asks.length = 0;
    const r = await post(JSON.stringify(sidekickAlert()), { auth: bearer(), type: "application/json; charset=utf-8", path: "/", headers: { "user-agent": "Falcosidekick" } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(r.body.outcome, "accepted");
    assert.equal(requester.asks.length, 1);
    assert.equal(requester.asks[0]?.container, CONTAINER);
    assert.equal(requester.asks[0]?.trigger, SwitchoverTrigger.FALCO);
  });

  it("prefers container.full_id when the rule's output carries it", async () => {
    requester.asks.length = 0;
    const full = `${CONTAINER}${"0".repeat(52)}`;
    const r = await post(JSON.stringify(falcoAlert({}, { "container.full_id": full })), { auth: bearer() });
    assert.equal(r.status, 202);
    assert.equal(requester.asks[0]?.container, full);
  });

  it("refuses a request without the token, or with a wrong one, with 401: nothing switched", async () => {
    requester.asks.length = 0;
    const moved = await counted(async () => {
      const none = await post(JSON.stringify(falcoAlert()));
      assert.equal(none.status, 401);
      assert.equal(none.body.outcome, "unauthenticated");
      assert.match(none.body.message, /a Bearer token \(or the Basic password\) or a client certificate of the shadowlayer CA \(detector or admin\) is required/);
      assert.equal(none.headers["www-authenticate"], 'Bearer realm="shadowlayer-falco"');
      for (const auth of [`Bearer ${token.slice(0, -1)}x`, basic("wrong-password-wrong"), `Bearer ${token}${token}`, "Token abc"]) {
        const r = await post(JSON.stringify(falcoAlert()), { auth });
        assert.equal(r.status, 401, auth);
        assert.equal(r.body.outcome, "unauthenticated");
      }
    });
    assert.deepEqual(moved, { unauthenticated: 5 });
    assert.equal(requester.asks.length, 0);
  });

  it("admits a detector or admin certificate of the shadowlayer CA without a token; refuses another CA's (401) and an agent's (403)", async () => {
    requester.asks.length = 0;
    const detector = await pair(tlsDir, tlsFiles.detectorCert, tlsFiles.detectorKey);
    const admin = await pair(tlsDir, tlsFiles.roleCert("admin"), tlsFiles.roleKey("admin"));
    const agent = await pair(tlsDir, tlsFiles.agentCert("node-a"), tlsFiles.agentKey("node-a"));
    const otherDir = join(dir, "other-tls");
    await initCerts(otherDir, { nodes: [], detector: true });
    const stranger = await pair(otherDir, tlsFiles.detectorCert, tlsFiles.detectorKey);

    const moved = await counted(async () => {
      assert.equal((await post(JSON.stringify(falcoAlert()), { as: detector })).status, 202);
      assert.equal((await post(JSON.stringify(falcoAlert()), { as: admin })).status, 202);
      const foreign = await post(JSON.stringify(falcoAlert()), { as: stranger });
      assert.equal(foreign.status, 401);
      assert.match(foreign.body.message, /^client certificate refused: /);
      const wrongRole = await post(JSON.stringify(falcoAlert()), { as: agent });
      assert.equal(wrongRole.status, 403);
      assert.equal(wrongRole.body.outcome, "forbidden");
      assert.match(wrongRole.body.message, /admits a detector or admin certificate; this one is agent/);
    });
    assert.deepEqual(moved, { accepted: 2, unauthenticated: 1, forbidden: 1 });
    assert.equal(requester.asks.length, 2, "only the detector's and the admin's alerts asked");
  });

  it("answers malformed alerts with 400 naming the field, and asks for nothing", async () => {
    requester.asks.length = 0;
    const cases: Array<[string, string, RegExp]> = [
      ["{not json", "body", /^body: not JSON/],
      [JSON.stringify([falcoAlert(), falcoAlert()]), "body", /one alert per request/],
      [JSON.stringify("an alert"), "body", /expected a JSON object/],
      [JSON.stringify(falcoAlert({ output_fields: { "proc.name": "x" } })), 'output_fields["container.id"]', /missing \(expected Falco's container id .*%container\.id/],
      [JSON.stringify(falcoAlert({}, { "container.id": "host" })), 'output_fields["container.id"]', /on the host \("host"\), not in a container/],
      [JSON.stringify(falcoAlert({}, { "container.id": "../../etc" })), 'output_fields["container.id"]', /expected Falco's container id \(12 or 64 hex digits\)/],
      [JSON.stringify(falcoAlert({}, { "container.id": 42 })), 'output_fields["container.id"]', /got 42/],
      [JSON.stringify(falcoAlert({ priority: 5 })), "priority", /expected one of emergency, alert/],
      [JSON.stringify(falcoAlert({ priority: "Severe" })), "priority", /got "Severe"/],
      [JSON.stringify(falcoAlert({ rule: ["x"] })), "rule", /expected a string, got an array/],
      [JSON.stringify(falcoAlert({ time: "yesterday" })), "time", /expected an RFC 3339 time/],
      [JSON.stringify(falcoAlert({ output_fields: "container.id=3a1b2c3d4e5f" })), "output_fields", /expected an object/],
      [JSON.stringify(falcoAlert({ tags: "container" })), "tags", /expected an array of strings/],
    ];
    const moved = await counted(async () => {
      for (const [body, field, message] of cases) {
        const r = await post(body, { auth: bearer() });
        assert.equal(r.status, 400, body.slice(0, 80));
        assert.equal(r.body.outcome, "malformed");
        assert.equal(r.body.field, field, body.slice(0, 80));
        assert.match(r.body.message, message);
        assert.ok(r.body.message.startsWith(`${field}: `), r.body.message);
      }
    });
    assert.deepEqual(moved, { malformed: cases.length });
    assert.equal(requester.asks.length, 0);
  });

  it("refuses a body over 64 KiB with 413, whether its length is declared, streamed or behind 100-continue", async () => {
    requester.asks.length = 0;
    const big = JSON.stringify(falcoAlert({ output: "A".repeat(70 * 1024) }));
    const moved = await counted(async () => {
      const declared = await post(big, { auth: bearer() });
      assert.equal(declared.status, 413);
      assert.match(declared.body.message, /at most 65536 are taken/);
      const streamed = await post(big, { auth: bearer(), chunked: true });
      assert.equal(streamed.status, 413);
      assert.match(streamed.body.message, /over 65536 bytes/);
      const expecting = await post(big, { auth: bearer(), expectContinue: true });
      assert.equal(expecting.status, 413);
    });
    assert.deepEqual(moved, { oversized: 3 });
    assert.equal(requester.asks.length, 0);
    // The connection is still good for the next one.
    assert.equal((await post(JSON.stringify(falcoAlert()), { auth: bearer() })).status, 202);
  });

  it("takes JSON only, POST only, at its path only", async () => {
    requester.asks.length = 0;
    const moved = await counted(async () => {
      const text = await post("10:20:05: Critical Executing binary not part of base image", { auth: bearer(), type: "text/plain" });
      assert.equal(text.status, 415);
      assert.match(text.body.message, /json_output true/);
      const gzip = await post(JSON.stringify(falcoAlert()), { auth: bearer(), headers: { "content-encoding": "gzip" } });
      assert.equal(gzip.status, 415);
      const put = await post(JSON.stringify(falcoAlert()), { auth: bearer(), method: "PUT" });
      assert.equal(put.status, 405);
      assert.equal(put.headers["allow"], "POST");
      const elsewhere = await post(JSON.stringify(falcoAlert()), { auth: bearer(), path: "/v1/other" });
      assert.equal(elsewhere.status, 404);
      assert.equal(elsewhere.body.outcome, "wrong_path");
    });
    assert.deepEqual(moved, { unsupported_media_type: 2, wrong_method: 1, wrong_path: 1 });
    assert.equal(requester.asks.length, 0);
  });

  it("answers 202 without switching for a rule outside the filter or a priority below the minimum", async () => {
    requester.asks.length = 0;
    const moved = await counted(async () => {
      const otherRule = await post(JSON.stringify(falcoAlert({ rule: "Read sensitive file untrusted", priority: "Warning" })), { auth: bearer() });
      assert.equal(otherRule.status, 202);
      assert.equal(otherRule.body.outcome, "filtered_rule");
      assert.match(otherRule.body.message, /^not switched: the rule matches none of the 3 rule patterns/);
      // Falco's stock "Terminal shell in container" is a Notice: listed, but below warning.
      const notice = await post(JSON.stringify(falcoAlert({ rule: "Terminal shell in container", priority: "Notice" })), { auth: bearer() });
      assert.equal(notice.status, 202);
      assert.equal(notice.body.outcome, "filtered_priority");
      assert.match(notice.body.message, /priority notice is below the minimum warning \(switching on: emergency, alert, critical, error, warning\)/);
      // A regex entry matches; an exact entry does not match a longer name.
      assert.equal((await post(JSON.stringify(falcoAlert({ rule: "Terminal shell in container", priority: "warning" })), { auth: bearer() })).body.outcome, "accepted");
      assert.equal((await post(JSON.stringify(falcoAlert({ rule: "Drop and execute new binary in container (custom)" })), { auth: bearer() })).body.outcome, "filtered_rule");
    });
    assert.deepEqual(moved, { filtered_rule: 2, filtered_priority: 1, accepted: 1 });
    assert.equal(requester.asks.length, 1);
  });

  it("answers 404 for a container the control does not know, 409 while a switchover runs, 503 when it fails otherwise", async () => {
    const unknown = "0123456789ab";
    const busy = "ba9876543210";
    const broken = "abcdefabcdef";
    requester.answers.set(unknown, (a) => Promise.reject(new ShadowError(Code.NotFound, `no container ${a.container}`)));
    requester.answers.set(busy, () => Promise.reject(new ShadowError(Code.FailedPrecondition, "a switchover of ba9876543210 is running (sw-7)")));
    requester.answers.set(broken, () => Promise.reject(new ShadowError(Code.AggregatorUnavailable, "agent node-a is not connected")));
    const moved = await counted(async () => {
      const nf = await post(JSON.stringify(falcoAlert({}, { "container.id": unknown })), { auth: bearer() });
      assert.equal(nf.status, 404);
      assert.equal(nf.body.outcome, "unknown_container");
      assert.equal(nf.body.container, unknown);
      const conflict = await post(JSON.stringify(falcoAlert({}, { "container.id": busy })), { auth: bearer() });
      assert.equal(conflict.status, 409);
      assert.match(conflict.body.message, /is running \(sw-7\)/);
      const down = await post(JSON.stringify(falcoAlert({}, { "container.id": broken })), { auth: bearer() });
      assert.equal(down.status, 503);
      assert.match(down.body.message, /agent node-a is not connected/);
    });
    assert.deepEqual(moved, { unknown_container: 1, conflict: 1, unavailable: 1 });
  });

  it("answers before Falco's output timeout when the control is slow, and counts the outcome when it comes", async () => {
    const slow = "5105105105ab";
    let release: (() => void) | undefined;
    requester.answers.set(slow, (a) => new Promise((resolve) => (release = () => resolve(create(SwitchoverRecordSchema, { id: "sw-slow", containerId: a.container, outcome: SwitchoverOutcome.WAITING, waitingForJob: "job-1" })))));
    const before = intake.stats().accepted;
    const started = Date.now();
    const r = await post(JSON.stringify(falcoAlert({}, { "container.id": slow })), { auth: bearer() });
    assert.equal(r.status, 202);
    assert.equal(r.body.outcome, "pending");
    assert.ok(Date.now() - started < 1500, "answered within the bound");
    assert.equal(intake.stats().accepted, before, "not counted before the control answers");
    release?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(intake.stats().accepted, before + 1);
  });

  it("shows every outcome's count in stats and on /metrics", async () => {
    const stats = intake.stats();
    assert.ok(stats.accepted >= 6 && stats.unauthenticated >= 6 && stats.malformed >= 13 && stats.oversized === 3 && stats.forbidden === 1, JSON.stringify(stats));
    const text = await (await fetch(`http://127.0.0.1:${metricsEndpoint.port}/metrics`)).text();
    for (const [outcome, n] of Object.entries(stats)) {
      assert.match(text, new RegExp(`^shadowlayer_aggregator_falco_requests_total\\{outcome="${outcome}"\\} ${n}$`, "m"), outcome);
    }
  });
});

/** A logger whose JSON lines land in `lines`. */
function capturingLogger(lines: string[]) {
  return pino(
    { level: "info" },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString("utf8").split("\n").filter((l) => l !== ""));
        cb();
      },
    }),
  );
}

/** A plain-HTTP POST to a loopback intake; its status and JSON answer. */
function postPlain(port: number, body: unknown, auth: string): Promise<{ status: number; outcome: string }> {
  return new Promise((resolve, reject) => {
    const b = JSON.stringify(body);
    const req = httpRequest({ host: "127.0.0.1", port, path: "/v1/falco", method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(b), authorization: auth } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, outcome: (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { outcome: string }).outcome }));
    });
    req.on("error", reject);
    req.end(b);
  });
}

describe("Falco intake settings", () => {
  let dir: string;
  const requester = new RecordingSwitchoverRequester();
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sl-falco-set-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("refuses to start without a token or mTLS, with a short token, or without TLS off loopback", async () => {
    const log = silentLogger();
    const short = join(dir, "short");
    await writeFile(short, "abc\n");
    const good = join(dir, "good");
    await writeFile(good, `${"t".repeat(32)}\n`);
    await assert.rejects(startFalcoIntake({ listen: "127.0.0.1:0" }, { requester, tls: "insecure", log }), /needs --falco-token-file or --falco-mtls/);
    await assert.rejects(startFalcoIntake({ listen: "127.0.0.1:0", tokenFile: short }, { requester, tls: "insecure", log }), /must hold one token of 16 to 4096 characters/);
    await assert.rejects(startFalcoIntake({ listen: "127.0.0.1:0", tokenFile: join(dir, "absent") }, { requester, tls: "insecure", log }), /cannot read the Falco intake's token file/);
    await assert.rejects(startFalcoIntake({ listen: "0.0.0.0:0", tokenFile: good }, { requester, tls: "insecure", log }), /--falco-listen 0\.0\.0\.0:0: --insecure listens on loopback only/);
    await assert.rejects(startFalcoIntake({ listen: "127.0.0.1:0", mtls: true, tokenFile: good }, { requester, tls: "insecure", log }), /client certificates need TLS/);
    await assert.rejects(startFalcoIntake({ listen: "127.0.0.1:0", tokenFile: good, rules: ["/(unclosed/"] }, { requester, tls: "insecure", log }), /rule pattern "\/\(unclosed\/"/);
  });

  it("serves plain HTTP on loopback with a token, and a known-container check refuses before the control is asked", async () => {
    const file = join(dir, "token");
    const t = "s3cret-token-of-enough-length";
    await writeFile(file, t);
    const rec = new RecordingSwitchoverRequester();
    const known = new Set([CONTAINER]);
    const plain = await startFalcoIntake({ listen: "127.0.0.1:0", tokenFile: file }, { requester: rec, tls: "insecure", log: silentLogger(), resolve: (id) => known.has(id) });
    try {
      assert.match(plain.url, /^http:\/\/127\.0\.0\.1:\d+\/v1\/falco$/);
      assert.equal((await postPlain(plain.port, falcoAlert(), `Bearer ${t}`)).status, 202);
      assert.equal((await postPlain(plain.port, falcoAlert({}, { "container.id": "ffffffffffff" }), `Bearer ${t}`)).status, 404);
      assert.deepEqual(rec.asks.map((a) => a.container), [CONTAINER]);
      assert.deepEqual({ accepted: plain.stats().accepted, unknown: plain.stats().unknown_container }, { accepted: 1, unknown: 1 });
    } finally {
      await plain.close();
    }
  });

  it("logs what a sender wrote only cut and escaped, and a burst of one refusal once", async () => {
    const file = join(dir, "token-log");
    const t = "another-token-long-enough";
    await writeFile(file, t);
    const lines: string[] = [];
    const logged = await startFalcoIntake({ listen: "127.0.0.1:0", tokenFile: file }, { requester: new RecordingSwitchoverRequester(), tls: "insecure", log: capturingLogger(lines) });
    try {
      const rule = `\u001b]0;owned\u0007${"R".repeat(900)}`;
      assert.equal((await postPlain(logged.port, falcoAlert({ rule, priority: "Debug" }), `Bearer ${t}`)).outcome, "filtered_priority");
      const line = lines.map((l) => JSON.parse(l) as { outcome?: string; rule?: string }).find((l) => l.outcome === "filtered_priority");
      assert.ok(line?.rule !== undefined, lines.join("\n"));
      assert.ok(line.rule.length < 220, `cut: ${line.rule.length}`);
      assert.ok(!/[\u0000-\u001f]/.test(line.rule), "no control character");
      assert.match(line.rule, /^\\u001b\]0;owned\\u0007R+… \(910 characters\)$/);
      for (let i = 0; i < 5; i++) assert.equal((await postPlain(logged.port, falcoAlert(), "Bearer nope")).status, 401);
      assert.equal(lines.filter((l) => (JSON.parse(l) as { outcome?: string }).outcome === "unauthenticated").length, 1, "one line for the burst");
      assert.equal(logged.stats().unauthenticated, 5, "every one counted");
      for (let i = 0; i < 3; i++) assert.equal((await postPlain(logged.port, falcoAlert(), `Bearer ${t}`)).outcome, "accepted");
      assert.equal(lines.filter((l) => (JSON.parse(l) as { outcome?: string }).outcome === "accepted").length, 3, "every switchover asked for is logged");
    } finally {
      await logged.close();
    }
  });
});
