import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { compileAffected, explain, isAffected, type OsvAffected, type OsvRange } from "../../aggregator/vulns/osv-eval.js";
import { schemeFor, type VersionScheme } from "../../aggregator/vulns/versions/index.js";

function scheme(eco: string): VersionScheme {
  const s = schemeFor(eco);
  assert.ok(s !== undefined, eco);
  return s;
}

/** Compiles, asserts no problems, and returns a checker of "version -> affected?". */
function compiled(eco: string, a: OsvAffected): (v: string) => boolean {
  const s = scheme(eco);
  const { compiled: c, problems } = compileAffected(a, s);
  assert.deepEqual(problems, []);
  return (v) => {
    const parsed = s.parse(v);
    const viaParsed = isAffected(c, v, parsed);
    assert.equal(isAffected(c, v), viaParsed, `isAffected with and without a parsed version disagree for ${v}`);
    assert.equal(explain(c, v, parsed).affected, viaParsed, `explain and isAffected disagree for ${v}`);
    return viaParsed;
  };
}

function eco(events: OsvRange["events"]): OsvRange {
  return { type: "ECOSYSTEM", events };
}

function expectAffected(check: (v: string) => boolean, yes: readonly string[], no: readonly string[]): void {
  for (const v of yes) assert.equal(check(v), true, `${v} should be affected`);
  for (const v of no) assert.equal(check(v), false, `${v} should not be affected`);
}

describe("OSV affected evaluation", () => {
  it("introduced / fixed: [introduced, fixed)", () => {
    const check = compiled("Debian:12", { ranges: [eco([{ introduced: "1.0" }, { fixed: "1.5-1" }])], versions: [] });
    expectAffected(check, ["1.0", "1.0-1", "1.4.9", "1.5", "1.5-0.1", "1.5-1~bpo1"], ["0.9", "1.0~rc1", "1.5-1", "1.5-2", "2.0", "1:0.1"]);
  });

  it('introduced "0" means since the first version', () => {
    const check = compiled("Debian:12", { ranges: [eco([{ introduced: "0" }, { fixed: "2.0-1" }])], versions: [] });
    // "0~" sorts below "0" in dpkg: still affected, since "0" stands for minus infinity here
    expectAffected(check, ["0~", "0", "0.1", "1.9", "2.0-0.1"], ["2.0-1", "2.0-2", "3"]);
  });

  it("introduced alone: everything from there on", () => {
    const check = compiled("PyPI", { ranges: [eco([{ introduced: "2.0" }])], versions: [] });
    expectAffected(check, ["2.0", "2.0.post1", "99"], ["1.9", "2.0rc1", "2.0.dev0"]);
  });

  it("last_affected is inclusive", () => {
    const check = compiled("PyPI", { ranges: [eco([{ introduced: "1.0" }, { last_affected: "1.4" }])], versions: [] });
    // 1.4+local sorts above 1.4 in PEP 440, so the strict rule leaves it out
    expectAffected(check, ["1.0", "1.3.9", "1.4", "1.4.0", "1.4rc1"], ["0.9", "1.4+local", "1.4.post1", "1.4.1", "2.0"]);
  });

  it("versions[] only: exact string matches", () => {
    const check = compiled("npm", { ranges: [], versions: ["1.2.3", "1.2.5"] });
    expectAffected(check, ["1.2.3", "1.2.5"], ["1.2.4", "v1.2.3", "1.2.3+build", "1.2.3-rc.1"]);
  });

  it("versions[] OR ranges", () => {
    const check = compiled("npm", { ranges: [eco([{ introduced: "2.0.0" }, { fixed: "2.1.0" }])], versions: ["1.0.0"] });
    expectAffected(check, ["1.0.0", "2.0.5"], ["1.0.1", "2.1.0"]);
  });

  it("several ranges are OR'ed", () => {
    const check = compiled("Alpine:v3.19", {
      ranges: [eco([{ introduced: "1.0-r0" }, { fixed: "1.2-r0" }]), eco([{ introduced: "3.0-r0" }, { fixed: "3.0.5-r0" }])],
      versions: [],
    });
    expectAffected(check, ["1.0-r0", "1.1-r3", "3.0-r0", "3.0.4-r9"], ["0.9-r0", "1.2-r0", "2.0-r0", "3.0.5-r0", "3.1-r0"]);
  });

  it("two introduced/fixed pairs in one range, in any input order", () => {
    const events = [{ introduced: "1.0.0" }, { fixed: "1.0.2" }, { introduced: "3.0.0" }, { fixed: "3.2.5" }];
    for (const order of [events, [...events].reverse(), [events[2], events[0], events[3], events[1]]]) {
      const check = compiled("npm", { ranges: [eco(order as OsvRange["events"])], versions: [] });
      expectAffected(check, ["1.0.0", "1.0.1", "3.0.0", "3.2.4", "3.2.5-rc.1"], ["0.9.0", "1.0.2", "2.9.9", "3.0.0-rc.1", "3.2.5", "4.0.0"]);
    }
  });

  it("SEMVER ranges use SemVer even in another ecosystem", () => {
    const check = compiled("PyPI", { ranges: [{ type: "SEMVER", events: [{ introduced: "0" }, { fixed: "1.10.0" }] }], versions: [] });
    // 1.10.0-rc.1 is not a PEP 440 version, but the SEMVER range still evaluates it
    expectAffected(check, ["1.9.0", "1.10.0-rc.1", "0.0.1"], ["1.10.0", "1.10.1", "2.0.0"]);
    // not SemVer at all (a PEP 440-only form): no range can match it
    assert.equal(check("1.9"), false);
  });

  it("limit bounds a range (exclusive); several limits are OR'ed; '*' is no limit", () => {
    const one = compiled("npm", { ranges: [eco([{ introduced: "0" }, { limit: "2.0.0" }])], versions: [] });
    expectAffected(one, ["0.1.0", "1.9.9", "2.0.0-rc.1"], ["2.0.0", "3.0.0"]);
    const two = compiled("npm", { ranges: [eco([{ introduced: "1.0.0" }, { limit: "1.5.0" }, { limit: "3.0.0" }])], versions: [] });
    expectAffected(two, ["1.0.0", "2.9.0"], ["0.9.0", "3.0.0"]);
    const star = compiled("npm", { ranges: [eco([{ introduced: "1.0.0" }, { limit: "*" }])], versions: [] });
    expectAffected(star, ["1.0.0", "99.0.0"], ["0.9.0"]);
    // a fixed inside the limit still closes the interval
    const both = compiled("npm", { ranges: [eco([{ introduced: "1.0.0" }, { fixed: "1.2.0" }, { limit: "5.0.0" }])], versions: [] });
    expectAffected(both, ["1.1.0"], ["1.2.0", "4.0.0", "5.0.0"]);
  });

  it("ignores GIT ranges and reports bad events without throwing", () => {
    const s = scheme("npm");
    const { compiled: c, problems } = compileAffected(
      {
        ranges: [
          { type: "GIT", events: [{ introduced: "0" }, { fixed: "deadbeef" }] },
          eco([{ introduced: "1.0.0" }, { fixed: "not-a-version" }]),
          eco([{ introduced: "1.0" }]),
          eco([{ introduced: "1.0.0", fixed: "2.0.0" }]),
          { type: "WEIRD" as OsvRange["type"], events: [{ introduced: "0" }] },
        ],
        versions: [],
      },
      s,
    );
    assert.equal(problems.length, 6, problems.join("\n"));
    assert.match(problems.join("\n"), /fixed "not-a-version" is not a valid semver version/);
    assert.match(problems.join("\n"), /unknown type "WEIRD"/);
    // The dropped fixed leaves its range open (errs towards affected); GIT matches nothing.
    assert.equal(isAffected(c, "5.0.0"), true);
    assert.equal(isAffected(c, "0.1.0"), false);
  });

  it("explains the deciding events", () => {
    const s = scheme("npm");
    const { compiled: c } = compileAffected(
      { ranges: [eco([{ introduced: "1.0.0" }, { fixed: "1.0.2" }, { introduced: "3.0.0" }, { last_affected: "3.2.5" }])], versions: ["0.5.0"] },
      s,
    );
    assert.deepEqual(explain(c, "1.0.1", s.parse("1.0.1")), { affected: true, introduced: "1.0.0", fixed: "1.0.2" });
    assert.deepEqual(explain(c, "3.2.5", s.parse("3.2.5")), { affected: true, introduced: "3.0.0", lastAffected: "3.2.5" });
    assert.deepEqual(explain(c, "2.0.0", s.parse("2.0.0")), { affected: false, introduced: "1.0.0", fixed: "1.0.2" });
    assert.deepEqual(explain(c, "4.0.0", s.parse("4.0.0")), { affected: false, introduced: "3.0.0", lastAffected: "3.2.5" });
    assert.deepEqual(explain(c, "0.5.0", s.parse("0.5.0")), { affected: true, viaVersionsList: true });
    assert.deepEqual(explain(c, "0.1.0", s.parse("0.1.0")), { affected: false });
  });
});

describe("a real record: CVE-2015-0235 (GHOST), Ubuntu eglibc", () => {
  // A copy of ../shared/fixtures/feeds/osv/CVE-2015-0235.json kept with the project's fixtures.
  const path = fileURLToPath(new URL("../../../test/fixtures/feeds/osv/CVE-2015-0235.json", import.meta.url));

  it("flags a vulnerable version and clears the fixed ones", () => {
    assert.ok(path !== undefined, "fixture CVE-2015-0235.json not found");
    const record = JSON.parse(readFileSync(path, "utf8")) as {
      affected: Array<{ package: { ecosystem: string; name: string }; ranges: OsvRange[]; versions: string[] }>;
    };
    const a = record.affected[0];
    assert.ok(a !== undefined);
    assert.equal(a.package.name, "eglibc");
    const s = scheme(a.package.ecosystem);
    assert.equal(s.name, "dpkg");
    const { compiled: c, problems } = compileAffected({ ranges: a.ranges, versions: a.versions }, s);
    assert.deepEqual(problems, []);

    const vulnerable = "2.19-0ubuntu5";
    assert.deepEqual(explain(c, vulnerable, s.parse(vulnerable)), {
      affected: true,
      introduced: "0",
      fixed: "2.19-0ubuntu6",
      viaVersionsList: true,
    });
    // Not in versions[], but inside the range (an older precise-era build).
    assert.equal(isAffected(c, "2.15-0ubuntu10.9", s.parse("2.15-0ubuntu10.9")), true);
    assert.equal(isAffected(c, "2.19-0ubuntu6~rc1", s.parse("2.19-0ubuntu6~rc1")), true);

    for (const fixed of ["2.19-0ubuntu6", "2.19-0ubuntu6.1", "2.19-0ubuntu7", "2.21-0ubuntu4"]) {
      assert.equal(isAffected(c, fixed, s.parse(fixed)), false, fixed);
      assert.deepEqual(explain(c, fixed, s.parse(fixed)), { affected: false, introduced: "0", fixed: "2.19-0ubuntu6" });
    }
  });
});
