/**
 * CVSS v4.0 base scores through the calculator, checked against scores FIRST's reference
 * calculator gives (the specification's examples and the reference implementation's), and the
 * vectors it must refuse.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cvss40BaseScore } from "../../aggregator/vulns/cvss.js";

describe("CVSS v4.0 base score", () => {
  it("gives FIRST's reference scores", () => {
    const known: Array<[string, number, string]> = [
      ["AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H", 10.0, "CRITICAL"],
      ["AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3, "CRITICAL"],
      ["AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:H/SI:H/SA:H", 7.9, "HIGH"],
      ["AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N", 6.9, "MEDIUM"],
      ["AV:N/AC:L/AT:N/PR:L/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N", 5.3, "MEDIUM"],
      ["AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 8.5, "HIGH"], // CVE-2022-41741 (nginx), spec examples
      ["AV:L/AC:L/AT:N/PR:L/UI:P/VC:N/VI:H/VA:H/SC:N/SI:L/SA:L", 5.2, "MEDIUM"],
      ["AV:P/AC:H/AT:P/PR:H/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N", 1.0, "LOW"],
      ["AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", 0, "NONE"],
    ];
    for (const [base, score, severity] of known) {
      const r = cvss40BaseScore(`CVSS:4.0/${base}`);
      assert.deepEqual(r, { score, severity, vector: `CVSS:4.0/${base}` }, base);
    }
  });

  it("scores the base metrics only: threat and environmental metrics are validated, then left out", () => {
    // FIRST's calculator: 9.1 with E:U (CVSS-BT), 9.8 with MVI:L/MSA:S (CVSS-BE), 4.7 for the BTE vector.
    const full = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H";
    assert.equal(cvss40BaseScore(`${full}/E:U`)?.score, 10);
    assert.equal(cvss40BaseScore(`${full}/MVI:L/MSA:S`)?.score, 10);
    const bte = cvss40BaseScore("CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:P/VC:N/VI:H/VA:H/SC:N/SI:L/SA:L/E:P/CR:H/IR:M/AR:H/MAV:A/MAT:P/MPR:N/MVI:H/MVA:N/MSI:H/MSA:N/S:N/V:C/U:Amber");
    assert.deepEqual(bte, { score: 5.2, severity: "MEDIUM", vector: "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:P/VC:N/VI:H/VA:H/SC:N/SI:L/SA:L" });
    // NVD writes every metric, the undefined ones as X.
    const nvd = "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N/E:X/CR:X/IR:X/AR:X/MAV:X/MAC:X/MAT:X/MPR:X/MUI:X/MVC:X/MVI:X/MVA:X/MSC:X/MSI:X/MSA:X/S:X/AU:X/R:X/V:X/RE:X/U:X";
    assert.equal(cvss40BaseScore(nvd)?.score, 5.3);
    // Only Table 23's order: "every other ordering is invalid" (v4.0 §7).
    assert.equal(cvss40BaseScore("CVSS:4.0/SA:H/SI:H/SC:H/VA:H/VI:H/VC:H/UI:N/PR:N/AT:N/AC:L/AV:N"), undefined);
  });

  it("refuses malformed vectors", () => {
    const bad = [
      "",
      "AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", // no prefix
      "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
      "CVSS:4.0/AV:F/AC:L/AT:N/PR:N/UI:N/VC:N/VI:L/VA:N/SC:N/SI:N/SA:N", // unknown value
      "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/ui:N/VC:N/VI:L/VA:N/SC:N/SI:N/SA:N", // metrics are case-sensitive
      "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:L/SC:N/SI:N/SA:N", // VA missing
      "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:L/VA:X/SC:N/SI:N/SA:N", // a base metric cannot be X
      "CVSS:4.0/AV:N/AV:L/AC:L/AT:N/PR:N/UI:N/VC:N/VI:L/VA:N/SC:N/SI:N/SA:N", // repeated
      "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:Q", // bad threat value
      "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/ZZ:1", // unknown metric
      "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/", // empty metric
      "CVSS:4.0/",
    ];
    for (const v of bad) assert.equal(cvss40BaseScore(v), undefined, v);
  });
});
