/** --feed flags: kinds, default names, and which sources are refused before anything is opened. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkSource, parseFeedFlags } from "../../aggregator/feeds/feed-config.js";
import { Code, ShadowError } from "../../common/errors.js";

const invalid = (pattern: RegExp) => (err: unknown) => err instanceof ShadowError && err.code === Code.InvalidArgument && pattern.test(err.message);

describe("feed configuration", () => {
  it("names feeds by kind, numbering repeats, and keeps everything after the first = as the source", () => {
    assert.deepEqual(parseFeedFlags(["osv=/a", "osv=/b", "kev=https://example.org/kev.json", "osv=/c", "epss=https://example.org/e.csv?x=1"]), [
      { name: "osv", kind: "osv", source: "/a" },
      { name: "osv-2", kind: "osv", source: "/b" },
      { name: "kev", kind: "kev", source: "https://example.org/kev.json" },
      { name: "osv-3", kind: "osv", source: "/c" },
      { name: "epss", kind: "epss", source: "https://example.org/e.csv?x=1" },
    ]);
    assert.deepEqual(parseFeedFlags([]), []);
  });

  it("refuses a flag that is not KIND=SOURCE with a known kind and a source", () => {
    for (const f of ["cve=/x", "osv", "=/x", "osv=", "OSV=/x"]) {
      assert.throws(() => parseFeedFlags([f]), invalid(/KIND=SOURCE.*osv, kev, epss, nvd/), f);
    }
  });

  it("accepts https anywhere and http only to loopback; paths are not checked here", () => {
    for (const s of ["https://example.org/kev.json", "http://127.0.0.1:8080/kev.json", "http://127.1.2.3/x", "http://localhost/x", "http://[::1]:9/x", "http://[0:0::1]/x", "/data/osv", "relative/all.zip"]) {
      assert.doesNotThrow(() => checkSource(s), s);
    }
    // A host is loopback as a parsed IP, not as text that starts with "127.".
    for (const s of ["http://192.0.2.1/kev.json", "http://128.0.0.1/x", "http://example.org/x", "ftp://127.0.0.1/x", "file:///etc/passwd", "http://127.example.org/x", "http://127.0.0.1.example.org/x", "http://0.0.0.0/x", "http://[::]/x"]) {
      assert.throws(() => checkSource(s), invalid(/only https:\/\/ URLs/), s);
    }
    assert.throws(() => checkSource("https://"), invalid(/is not a valid URL/));
    assert.throws(() => parseFeedFlags(["osv=/a", "kev=http://192.0.2.1/kev.json"]), invalid(/only https/));
  });
});
