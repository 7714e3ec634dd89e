/**
 * The Falco intake's settings as `shadowlayer aggregator` and `up` take them: --falco-* flags and
 * their variables become the intake's options; a setting that would run it anonymous, without
 * TLS off loopback, or with a pattern that cannot match is refused naming the flag.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { describe, it } from "node:test";
import { resolveAggregatorConfig } from "../../aggregator/config.js";
import { readTokenFile } from "../../aggregator/control/falco-auth.js";
import { PACKAGE_ROOT } from "../../common/paths.js";
import { ensureFalcoToken, resolveUpConfig } from "../../cli/run-up.js";

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, "dist/cli/main.js");

describe("Falco intake configuration", () => {
  it("is off unless --falco-listen is given", () => {
    assert.equal(resolveAggregatorConfig({}, {}).aggregator.falco, undefined);
  });

  it("turns the flags into the intake's options, the priority in Falco's spelling too", () => {
    const c = resolveAggregatorConfig(
      { falcoListen: "0.0.0.0:7444", falcoTokenFile: "/etc/falco/token", falcoMtls: true, falcoRule: ["Terminal shell in container", "/^Drop and execute/i"], falcoMinPriority: "Critical" },
      {},
    );
    assert.deepEqual(c.aggregator.falco, { listen: "0.0.0.0:7444", tokenFile: "/etc/falco/token", mtls: true, rules: ["Terminal shell in container", "/^Drop and execute/i"], minPriority: "critical" });
    assert.equal(resolveAggregatorConfig({ falcoListen: "127.0.0.1:7444", falcoTokenFile: "/t" }, {}).aggregator.falco?.minPriority, "warning", "the default");
  });

  it("reads the listen address, token file and priority from the environment", () => {
    const c = resolveAggregatorConfig({}, { SHADOWLAYER_FALCO_LISTEN: "127.0.0.1:7444", SHADOWLAYER_FALCO_TOKEN_FILE: "/run/token", SHADOWLAYER_FALCO_MIN_PRIORITY: "error" });
    assert.deepEqual(c.aggregator.falco, { listen: "127.0.0.1:7444", tokenFile: "/run/token", mtls: false, rules: [], minPriority: "error" });
    assert.equal(resolveAggregatorConfig({}, { SHADOWLAYER_FALCO_LISTEN: "127.0.0.1:7444", SHADOWLAYER_FALCO_MTLS: "true" }).aggregator.falco?.mtls, true);
    assert.throws(() => resolveAggregatorConfig({}, { SHADOWLAYER_FALCO_LISTEN: "127.0.0.1:7444", SHADOWLAYER_FALCO_MTLS: "yes" }), /SHADOWLAYER_FALCO_MTLS: expected true or false, got "yes"/);
  });

  it("refuses what would run the intake anonymous, without TLS off loopback, or with a pattern that cannot match", () => {
    const refuses = (flags: Parameters<typeof resolveAggregatorConfig>[0], message: RegExp) => assert.throws(() => resolveAggregatorConfig(flags, {}), message);
    refuses({ falcoListen: "127.0.0.1:7444" }, /^ShadowError: --falco-listen: the intake needs --falco-token-file or --falco-mtls: it admits no anonymous alert, got "127\.0\.0\.1:7444"/);
    const loopback = { listen: "127.0.0.1:0", http: "127.0.0.1:0", insecure: true };
    refuses({ ...loopback, falcoListen: "127.0.0.1:7444" }, /--falco-listen: the intake needs --falco-token-file: it admits no anonymous alert/);
    refuses({ ...loopback, falcoListen: "127.0.0.1:7444", falcoMtls: true }, /--falco-mtls: client certificates need TLS \(not --insecure\)/);
    refuses({ ...loopback, falcoListen: "0.0.0.0:7444", falcoTokenFile: "/t" }, /--falco-listen: --insecure listens on loopback only/);
    refuses({ falcoTokenFile: "/t" }, /--falco-token-file: configures the Falco intake, which runs only with --falco-listen/);
    refuses({ falcoRule: ["x"] }, /--falco-rule: configures the Falco intake, which runs only with --falco-listen/);
    refuses({ falcoListen: "127.0.0.1:7444", falcoTokenFile: "/t", falcoRule: ["ok", "/(open/"] }, /--falco-rule: rule pattern "\/\(open\/": Invalid regular expression/);
    refuses({ falcoListen: "127.0.0.1:7444", falcoTokenFile: "/t", falcoMinPriority: "severe" }, /--falco-min-priority: expected one of emergency, alert, critical, error, warning, notice, informational, debug, got "severe"/);
    refuses({ falcoListen: "7444", falcoTokenFile: "/t" }, /--falco-listen: expected host:port/);
  });

  it("up: with --falco-listen and neither a token nor mTLS, the token is <data-dir>/falco.token", () => {
    const up = resolveUpConfig({ dataDir: "/srv/sl", falcoListen: "127.0.0.1:7444", insecure: true }, {});
    assert.equal(up.aggregator.aggregator.falco?.tokenFile, join(resolve("/srv/sl"), "falco.token"));
    assert.equal(resolveUpConfig({ dataDir: "/srv/sl", falcoListen: "127.0.0.1:7444", falcoTokenFile: "/mine" }, {}).aggregator.aggregator.falco?.tokenFile, "/mine");
    assert.equal(resolveUpConfig({ dataDir: "/srv/sl", falcoListen: "127.0.0.1:7444", falcoMtls: true }, {}).aggregator.aggregator.falco?.tokenFile, undefined);
    assert.equal(resolveUpConfig({ dataDir: "/srv/sl" }, {}).aggregator.aggregator.falco, undefined);
  });

  it("up: makes its token file once (0600, a token the intake takes), and never touches one it was given", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sl-falco-up-"));
    try {
      const said: string[] = [];
      const c = resolveUpConfig({ dataDir: dir, falcoListen: "127.0.0.1:7444", insecure: true }, {});
      await ensureFalcoToken(c, dir, (l) => said.push(l));
      const file = join(dir, "falco.token");
      const token = await readFile(file, "utf8");
      assert.match(token, /^[0-9a-f]{64}\n$/);
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.equal(await readTokenFile(file), token.trim());
      assert.deepEqual(said, [`Falco intake token made in ${file}`]);
      await ensureFalcoToken(c, dir, (l) => said.push(l));
      assert.equal(await readFile(file, "utf8"), token, "kept");
      assert.equal(said.length, 1);
      const mine = join(dir, "mine");
      await writeFile(mine, "x");
      await ensureFalcoToken(resolveUpConfig({ dataDir: dir, falcoListen: "127.0.0.1:7444", falcoTokenFile: mine }, {}), dir, (l) => said.push(l));
      assert.equal(await readFile(mine, "utf8"), "x");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("the commands take the flags and say what is wrong in one line", async () => {
    for (const cmd of ["aggregator", "up"]) {
      const help = (await run(process.execPath, [CLI, cmd, "--help"])).stdout;
      for (const flag of ["--falco-listen", "--falco-token-file", "--falco-mtls", "--falco-rule", "--falco-min-priority"]) assert.ok(help.includes(flag), `${cmd} --help: ${flag}`);
    }
    const failed = await run(process.execPath, [CLI, "aggregator", "--insecure", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--falco-listen", "127.0.0.1:0"]).then(
      () => assert.fail("started"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /^shadowlayer: --falco-listen: the intake needs --falco-token-file: it admits no anonymous alert/m);
  });
});
