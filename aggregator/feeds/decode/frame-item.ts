/** The bridge from framed JSON values to a parser's feed items. */
import { type FeedItem, reject } from "../parse/types.js";
import type { JsonFrame } from "./json-framer.js";

/** A framed value run through a record check, or a bad frame, as a feed item that says where it was. */
export function fromFrame<T>(frame: JsonFrame, check: (json: unknown) => FeedItem<T>, label: string): FeedItem<T> {
  const at = `${label} line ${frame.line}`;
  const item = frame.ok ? check(frame.value) : reject<T>(frame.reason, frame.detail);
  if (!item.ok) item.rejection.at = at;
  return item;
}
