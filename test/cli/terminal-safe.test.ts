/**
 * Terminal-safe output: every control and bidi control character a container could put in a
 * string is shown as visible text, nothing else changes, and tables stay aligned after escaping.
 * Every renderer the CLI prints is fed hostile strings and must print no raw control character.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LayerGraphSchema, LayerKind, MountCheckStatus } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import { AgentSummarySchema, ContainerSummarySchema } from "../../proto/gen/shadowlayer/v1/query_pb.js";
import { DetectionSchema, WindowSummarySchema } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import { ContainerScoresSchema, FeedStatusSchema, VulnMatchSchema } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { renderContainers } from "../../cli/containers-format.js";
import { renderTree } from "../../cli/ldg-format.js";
import { cellWidth, renderTable } from "../../cli/table.js";
import { renderAgents } from "../../cli/agents-format.js";
import { renderDetections, renderTop } from "../../cli/telemetry-format.js";
import { safeLine, terminalSafe } from "../../cli/terminal-safe.js";
import { renderFeeds, renderScores, renderVulns } from "../../cli/vulns-format.js";

/** Any C0, DEL, C1 or bidi control character left raw. */
const RAW = /[\p{Cc}\p{Bidi_Control}]/u;
/** What a hostile image or process carries: an OSC title, a screen clear, a C1 CSI, a right-to-left override, a line break. */
const HOSTILE = "x\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eexe.txt\n";
const SHOWN = "x\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eexe.txt\\n";

function hex(n: number, digits: number): string {
  return n.toString(16).padStart(digits, "0");
}

/** Every line free of raw control characters (the "\n" between lines is the renderer's own). */
function assertNoRaw(text: string, lines: number): void {
  const split = text.split("\n");
  assert.equal(split.length, lines, `one line per row:\n${text}`);
  for (const l of split) assert.doesNotMatch(l, RAW, JSON.stringify(l));
}

describe("terminalSafe", () => {
  it("shows every C0 control, DEL and every C1 control as \\xHH (\\n, \\r, \\t by name)", () => {
    for (let n = 0; n <= 0x1f; n++) {
      const c = String.fromCharCode(n);
      const expected = c === "\n" ? "\\n" : c === "\r" ? "\\r" : c === "\t" ? "\\t" : `\\x${hex(n, 2)}`;
      assert.equal(terminalSafe(`a${c}b`), `a${expected}b`, `U+${hex(n, 4)}`);
    }
    assert.equal(terminalSafe("\x7f"), "\\x7f");
    for (let n = 0x80; n <= 0x9f; n++) assert.equal(terminalSafe(String.fromCharCode(n)), `\\x${hex(n, 2)}`, `U+${hex(n, 4)}`);
  });

  it("shows every bidi override, embedding, isolate and mark as \\uHHHH", () => {
    for (const n of [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x200e, 0x200f, 0x061c]) {
      assert.equal(terminalSafe(`a${String.fromCharCode(n)}b`), `a\\u${hex(n, 4)}b`, `U+${hex(n, 4)}`);
    }
  });

  it("turns the escape sequences a container can plant into plain text", () => {
    assert.equal(terminalSafe("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
    assert.equal(terminalSafe("\x1b[2J"), "\\x1b[2J");
    assert.equal(terminalSafe(HOSTILE), SHOWN);
    assert.doesNotMatch(terminalSafe(HOSTILE), RAW);
  });

  it("leaves printable text alone: ASCII, accents, CJK, emoji, combining marks, NBSP, box drawing", () => {
    for (const s of ["/usr/bin/env python3 -c 'print(1)'", "naïve café", "日本語のパス", "🚀 👩‍👩‍👧", "e\u0301", "a\u00a0b ©", "├─ └─ │", "\\x1b (four characters)", ""]) {
      assert.equal(terminalSafe(s), s, JSON.stringify(s));
    }
  });

  it("safeLine escapes the values and keeps the program's own text", () => {
    const id = "abc\x1b[2J";
    assert.equal(safeLine`- ${id} removed (${3} layers)`, "- abc\\x1b[2J removed (3 layers)");
    assert.equal(safeLine`plain`, "plain");
  });
});

describe("tables", () => {
  it("measures terminal cells: ASCII one each, CJK and emoji two, combining marks none", () => {
    assert.equal(cellWidth("abc"), 3);
    assert.equal(cellWidth("日本"), 4);
    assert.equal(cellWidth("🚀"), 2);
    assert.equal(cellWidth("e\u0301"), 1);
    assert.equal(cellWidth(terminalSafe("\x1b[2J")), "\\x1b[2J".length);
  });

  it("pads columns from the escaped text, so rows stay aligned and one line each", () => {
    const t = renderTable(["NAME", "N"], [["a\x1b[2Jb", "1"], ["日本", "2"], ["two\nlines", "3"]]);
    assert.equal(
      t,
      [
        "NAME        N", //
        "a\\x1b[2Jb   1",
        "日本        2",
        "two\\nlines  3",
      ].join("\n"),
    );
    assertNoRaw(t, 4);
  });

  it("escapes header cells and missing cells too", () => {
    assert.equal(renderTable(["A\x1b", "B"], [["x"]]), "A\\x1b  B\nx");
  });
});

describe("every human view of what a container said", () => {
  const at = timestampFromDate(new Date("2026-01-01T00:00:00Z"));

  it("graph tree: image history, process names and executable paths", () => {
    const g = create(LayerGraphSchema, {
      containerId: "c".repeat(64),
      containerName: `web${HOSTILE}`,
      image: `img${HOSTILE}`,
      state: "running",
      node: `node${HOSTILE}`,
      mountCheck: { status: MountCheckStatus.MISMATCH, detail: `detail${HOSTILE}` },
      layers: [
        { layerId: `sha256:${"a".repeat(64)}`, kind: LayerKind.IMAGE, index: 0, name: `RUN cp ${HOSTILE}`, sizeBytes: 10n, processes: [{ pid: 7, name: `busybox${HOSTILE}`, exe: `/bin/busybox${HOSTILE}`, argv: [HOSTILE] }] },
        { layerId: `volume:v${HOSTILE}`, kind: LayerKind.VOLUME, name: `vol${HOSTILE}` },
        { layerId: `rw:${"c".repeat(64)}`, kind: LayerKind.WRITABLE, name: "container writable layer", drift: true, processes: [{ pid: 8, name: "x", exe: `/tmp/${HOSTILE}`, drift: true, driftReason: `added${HOSTILE}` }] },
      ],
    });
    const tree = renderTree(g);
    assertNoRaw(tree, 2 + 3 + 2);
    assert.ok(tree.includes(`RUN cp ${SHOWN}`), tree);
    assert.ok(tree.includes(`pid 7 busybox${SHOWN} (/bin/busybox${SHOWN})`), tree);
    assert.ok(tree.includes(`drift: added${SHOWN}`), tree);
    // Names start in one column on the image and writable lines (their ids fit their column).
    const lines = tree.split("\n");
    assert.equal(lines.find((l) => l.includes("[0]"))?.indexOf("RUN cp"), lines.find((l) => l.includes("rw "))?.indexOf("container writable layer"));
  });

  it("top, detections and agents tables", () => {
    const w = create(WindowSummarySchema, {
      containerId: "c".repeat(64),
      containerName: `web${HOSTILE}`,
      start: at,
      end: timestampFromDate(new Date("2026-01-01T00:00:10Z")),
      layers: [{ layerId: `sha256:${"a".repeat(64)}`, layerName: `RUN ${HOSTILE}`, processes: 1, cpuSeconds: 1 }],
    });
    assertNoRaw(renderTop([w]), 2);
    assert.ok(renderTop([w]).includes(`RUN ${SHOWN}`));
    const d = create(DetectionSchema, { at, containerName: `web${HOSTILE}`, layerId: `rw:${HOSTILE}`, reason: `added${HOSTILE}`, pid: 9, path: `/tmp/busybox${HOSTILE}`, source: `ebpf${HOSTILE}` });
    const dt = renderDetections([d, d]);
    assertNoRaw(dt, 3);
    assert.ok(dt.includes(`/tmp/busybox${SHOWN}`));
    const header = dt.split("\n")[0] ?? "";
    const row = dt.split("\n")[1] ?? "";
    assert.equal(row.indexOf("ebpf"), header.indexOf("SOURCE"), "the last column lines up after the escaped path");
    assertNoRaw(renderAgents([create(AgentSummarySchema, { node: `n${HOSTILE}`, telemetry: { execSource: `ebpf${HOSTILE}` } })]), 2);
  });

  it("containers, scores, vulns and feeds tables", () => {
    assertNoRaw(renderContainers([create(ContainerSummarySchema, { containerId: "c".repeat(64), containerName: `n${HOSTILE}`, image: `i${HOSTILE}`, node: `n${HOSTILE}`, state: `s${HOSTILE}` })]), 2);
    assertNoRaw(
      renderScores([
        create(ContainerScoresSchema, {
          containerName: `n${HOSTILE}`,
          node: `n${HOSTILE}`,
          policy: { name: `p${HOSTILE}` },
          caveats: [`c${HOSTILE}`],
        }),
        create(ContainerScoresSchema, { containerName: "m", layers: [{ layerId: `sha256:${HOSTILE}`, risk: 1, reasons: [{ id: `CVE${HOSTILE}` }] }] }),
      ]),
      3,
    );
    assertNoRaw(renderVulns([create(VulnMatchSchema, { id: `CVE${HOSTILE}`, package: `p${HOSTILE}`, installedVersion: `1${HOSTILE}`, fixedVersion: `2${HOSTILE}`, layerId: `sha256:${HOSTILE}` })]), 2);
    assertNoRaw(
      renderFeeds([
        create(FeedStatusSchema, { name: `f${HOSTILE}`, kind: "osv", state: "failed", source: `https://x/${HOSTILE}`, error: `bad ${HOSTILE}`, ageSeconds: -1 }),
        create(FeedStatusSchema, { name: "g", kind: "kev", state: "ok", source: "s", rejectedByReason: { [`why${HOSTILE}`]: 2n }, ageSeconds: 5 }),
      ]),
      3,
    );
  });
});
