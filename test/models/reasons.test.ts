/**
 * Reasons in words: sign, sigma and the value against the baseline; hostile feature names are cut
 * to printable characters.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeReason } from "../../models/reasons.js";

describe("reason text", () => {
  it("says how far above or below the baseline", () => {
    assert.equal(describeReason({ feature: "cpu_seconds.rate", sigma: 7.34, contribution: 0.6, value: 0.5358, baseline: 0.06158 }), "cpu_seconds.rate 7.3σ above baseline (0.536 vs 0.0616)");
    assert.equal(describeReason({ feature: "threads.mean", sigma: -2.06, contribution: 0.1, value: 2, baseline: 4 }), "threads.mean 2.1σ below baseline (2 vs 4)");
    assert.equal(describeReason({ feature: "rss_bytes.max", sigma: 12, contribution: 0.1, value: 123456789, baseline: 20000000 }), "rss_bytes.max 12.0σ above baseline (123000000 vs 20000000)");
  });

  it("keeps a hostile feature name printable and short", () => {
    const text = describeReason({ feature: "\u001b[31mred\nline" + "x".repeat(100), sigma: Number.NaN, contribution: 0, value: Number.POSITIVE_INFINITY, baseline: 0 });
    assert.match(text, /^\?\[31mred\?linex+ \?σ above baseline \(Infinity vs 0\)$/);
    assert.ok(!/[\u0000-\u001f]/.test(text));
    assert.ok(text.length < 120);
  });
});
