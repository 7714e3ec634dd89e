import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cvss31BaseScore, roundup, severityOf } from "../../aggregator/vulns/cvss.js";

describe("CVSS v3.1 base score", () => {
  it("scores known vectors (scores as published in the CVSS v3.1 examples document and NVD)", () => {
    const known: Array<[string, number, string]> = [
      ["AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "CRITICAL"], // CVE-2014-6271 Shellshock
      ["AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0, "CRITICAL"],
      ["AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5, "HIGH"], // CVE-2014-0160 Heartbleed
      ["AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, "MEDIUM"], // CVE-2013-1937 phpMyAdmin XSS
      ["AV:L/AC:L/PR:H/UI:N/S:U/C:L/I:L/A:L", 4.2, "MEDIUM"], // CVE-2009-0783 Tomcat
      ["AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 8.8, "HIGH"], // CVE-2012-0384 Cisco IOS
      ["AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8, "HIGH"], // CVE-2015-1098 Apple iWork
      ["AV:N/AC:H/PR:N/UI:N/S:C/C:N/I:H/A:N", 6.8, "MEDIUM"], // CVE-2008-1447 DNS Kaminsky
      ["AV:P/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 6.8, "MEDIUM"], // CVE-2014-2005 Sophos
      ["AV:N/AC:L/PR:N/UI:N/S:C/C:L/I:N/A:N", 5.8, "MEDIUM"], // CVE-2010-0467 Joomla
      ["AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 8.8, "HIGH"], // CVE-2011-1265 Windows Bluetooth
      ["AV:P/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:N", 4.6, "MEDIUM"], // CVE-2014-2019 Apple iOS
      ["AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1, "LOW"], // CVE-2014-3566 POODLE
      ["AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9, "CRITICAL"], // CVE-2012-1516 VMware
      ["AV:N/AC:L/PR:N/UI:R/S:C/C:H/I:H/A:H", 9.6, "CRITICAL"], // CVE-2012-5376 Chrome
      ["AV:N/AC:L/PR:H/UI:R/S:C/C:L/I:L/A:N", 4.8, "MEDIUM"], // stored XSS by an admin: PR:H is 0.5 when S:C
      ["AV:N/AC:L/PR:H/UI:N/S:C/C:L/I:L/A:N", 5.5, "MEDIUM"],
      ["AV:N/AC:L/PR:H/UI:N/S:U/C:L/I:L/A:N", 3.8, "LOW"],
      ["AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0, "NONE"],
    ];
    for (const [base, score, severity] of known) {
      for (const prefix of ["CVSS:3.1/", "CVSS:3.0/"]) {
        const r = cvss31BaseScore(prefix + base);
        assert.ok(r !== undefined, prefix + base);
        assert.equal(r.score, score, prefix + base);
        assert.equal(r.severity, severity, prefix + base);
        assert.equal(r.vector, prefix + base);
      }
    }
  });

  it("ignores temporal and environmental metrics and accepts any metric order", () => {
    const r = cvss31BaseScore("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O/RC:C/CR:H/MAV:L/MS:C");
    assert.deepEqual(r, { score: 9.8, severity: "CRITICAL", vector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" });
    const shuffled = cvss31BaseScore("CVSS:3.1/A:H/I:H/C:H/S:U/UI:N/PR:N/AC:L/AV:N");
    assert.equal(shuffled?.score, 9.8);
    assert.equal(shuffled?.vector, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H");
  });

  it("rejects invalid vectors", () => {
    const bad = [
      "",
      "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", // no prefix
      "CVSS:2.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
      "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
      "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H", // A missing
      "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", // unknown value
      "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1", // unknown metric
      "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", // duplicate
      "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:Q", // bad temporal value
      "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/", // empty metric
      "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:h", // values are case-sensitive
      "CVSS:3.1/",
    ];
    for (const v of bad) assert.equal(cvss31BaseScore(v), undefined, v);
  });

  it("uses the integer-based Roundup of Appendix A", () => {
    assert.equal(roundup(4.0), 4.0);
    assert.equal(roundup(4.02), 4.1);
    assert.equal(roundup(4.00001), 4.1);
    assert.equal(roundup(4.000001), 4.0); // below the 5th decimal: treated as float noise
    assert.equal(roundup(0.1 + 0.2), 0.3); // 0.30000000000000004
    assert.equal(roundup(9.99), 10.0);
  });

  it("maps scores to the qualitative scale", () => {
    assert.equal(severityOf(0), "NONE");
    assert.equal(severityOf(0.1), "LOW");
    assert.equal(severityOf(3.9), "LOW");
    assert.equal(severityOf(4.0), "MEDIUM");
    assert.equal(severityOf(6.9), "MEDIUM");
    assert.equal(severityOf(7.0), "HIGH");
    assert.equal(severityOf(8.9), "HIGH");
    assert.equal(severityOf(9.0), "CRITICAL");
    assert.equal(severityOf(10), "CRITICAL");
  });
});
