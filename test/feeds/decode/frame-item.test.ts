/** From frames to feed items: a good frame goes through the check, and every rejection says where. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromFrame } from "../../../aggregator/feeds/decode/frame-item.js";
import { type FeedItem, reject } from "../../../aggregator/feeds/parse/types.js";

const check = (json: unknown): FeedItem<number> => (typeof json === "number" ? { ok: true, record: json } : reject("not a number", typeof json, "X-1"));

describe("frame to feed item", () => {
  it("runs a good frame through the check and keeps an accepted record as it is", () => {
    assert.deepEqual(fromFrame({ ok: true, value: 7, line: 3, byte: 20 }, check, "kev"), { ok: true, record: 7 });
  });

  it("puts the place on a rejection by the check", () => {
    assert.deepEqual(fromFrame({ ok: true, value: "x", line: 3, byte: 20 }, check, "kev"), {
      ok: false,
      rejection: { reason: "not a number", detail: "string", id: "X-1", at: "kev line 3" },
    });
  });

  it("turns a bad frame into a rejection with its reason, detail and place, without calling the check", () => {
    const never = (): FeedItem<number> => assert.fail("the check ran on a bad frame");
    assert.deepEqual(fromFrame({ ok: false, reason: "too large", detail: "11 bytes (limit 10)", line: 9, byte: 400 }, never, "nvd"), {
      ok: false,
      rejection: { reason: "too large", detail: "11 bytes (limit 10)", at: "nvd line 9" },
    });
  });
});
